use arbor_tests::{TestCluster, TIMEOUT};
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_prints_logs() {
    let c = TestCluster::voters(3).await;
    let l = c.wait_leader(TIMEOUT).await;
    c.kill(l);
    c.wait_until("never", std::time::Duration::from_secs(2), async || Err::<(), _>("nope".to_string())).await;
}
