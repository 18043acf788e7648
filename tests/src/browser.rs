//! A real headless Chromium for the explorer's browser tests: load a page,
//! take the DOM it ended with, take a screenshot.
//!
//! The browser is Debian's `chromium` (scripts/test.sh installs it when it
//! is missing), or whatever `ARBOR_CHROMIUM` names. Without one the test
//! fails with a message saying so: a browser test that cannot run must not
//! pass.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// How long one page load may take (a busy machine, a cold browser).
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Browser {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Finds Chromium; panics with the way to install it when there is none.
    pub fn find() -> Browser {
        let candidates: Vec<PathBuf> = match std::env::var_os("ARBOR_CHROMIUM") {
            Some(p) => vec![PathBuf::from(p)],
            None => ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .filter_map(|n| which(n))
                .collect(),
        };
        let bin = candidates
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                "no Chromium found for the explorer's browser tests: install Debian's `chromium` \
                 (`apt-get install chromium`; scripts/test.sh does it when it is missing) or set \
                 ARBOR_CHROMIUM to a Chromium binary"
            )
            });
        Browser {
            bin,
            profile: tempfile::tempdir().expect("browser profile dir"),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--metrics-recording-only",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", self.profile.path().display()))
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
        c
    }

    async fn run(&self, mut c: Command, what: &str) -> std::process::Output {
        let out = tokio::time::timeout(LOAD_TIMEOUT, c.output())
            .await
            .unwrap_or_else(|_| panic!("chromium {what} did not finish within {LOAD_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()));
        assert!(
            out.status.success(),
            "chromium {what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The page's DOM after it loaded, serialized. With `virtual_ms`, the
    /// page's timers first run for that much (virtual) time, so a script's
    /// polling has happened.
    pub async fn dom(&self, url: &str, virtual_ms: Option<u64>) -> String {
        let mut c = self.command();
        if let Some(ms) = virtual_ms {
            c.arg(format!("--virtual-time-budget={ms}"));
        }
        c.arg("--window-size=1280,1700").arg("--dump-dom").arg(url);
        let out = self.run(c, &format!("--dump-dom {url}")).await;
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A PNG screenshot of the page at `path` (1280x1700 CSS pixels).
    pub async fn screenshot(&self, url: &str, path: &Path) {
        self.screenshot_at(url, path, (1280, 1700), 1.0).await
    }

    /// A PNG screenshot of the top `size` CSS pixels of the page, rendered at `scale`.
    pub async fn screenshot_at(&self, url: &str, path: &Path, size: (u32, u32), scale: f32) {
        let mut c = self.command();
        c.arg(format!("--window-size={},{}", size.0, size.1))
            .arg(format!("--force-device-scale-factor={scale}"))
            .arg(format!("--screenshot={}", path.display()))
            .arg(url);
        self.run(c, &format!("--screenshot {url}")).await;
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} is {len} bytes", path.display());
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Where the tests keep screenshots: `<target dir>/explorer-screenshots/`.
pub fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let d = dir.join("explorer-screenshots");
    std::fs::create_dir_all(&d).expect("create the screenshot dir");
    d
}
