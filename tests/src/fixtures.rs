//! Test data: orders and commands built by hand (including broken ones).

use arbor_proto::ledger;
use arbor_proto::pb;
use ed25519_dalek::SigningKey;
use prost::Message;

/// The channel name used in external references.
pub const CHANNEL_NAME: &str = "meituan";

/// Total of [`sample_order`]: 2 x 1250 + 1 x 500.
pub const SAMPLE_TOTAL: i64 = 3000;

/// A valid order: two lines, total 3000 CNY, one external reference
/// `meituan/ext-<order_id>`.
pub fn sample_order(order_id: &str) -> pb::RegisterOrder {
    sample_order_with_ref(order_id, CHANNEL_NAME, &format!("ext-{order_id}"))
}

pub fn sample_order_with_ref(
    order_id: &str,
    channel: &str,
    external_id: &str,
) -> pb::RegisterOrder {
    pb::RegisterOrder {
        order_id: order_id.to_string(),
        external_refs: vec![pb::ExternalRef {
            channel: channel.to_string(),
            external_id: external_id.to_string(),
        }],
        lines: vec![
            pb::OrderLine {
                sku: "sku-tea-500g".into(),
                quantity: 2,
                unit_price: 1250,
            },
            pb::OrderLine {
                sku: "sku-cup".into(),
                quantity: 1,
                unit_price: 500,
            },
        ],
        currency: "CNY".into(),
        total: SAMPLE_TOTAL,
        destination_region: SAMPLE_REGION.into(),
        ..Default::default()
    }
}

/// The region every sample order goes to.
pub const SAMPLE_REGION: &str = "CN-31";

/// A capability profile serving [`SAMPLE_REGION`], room for 100,000 open
/// orders, dispatch within an hour.
pub fn sample_profile() -> pb::PublishProfile {
    pb::PublishProfile {
        regions: vec![SAMPLE_REGION.into()],
        max_open_orders: 100_000,
        dispatch_time_ms: 3_600_000,
        ..Default::default()
    }
}

pub fn sample_profile_body() -> pb::command::Body {
    pb::command::Body::PublishProfile(sample_profile())
}

/// A fresh ed25519 key (not enrolled anywhere).
pub fn random_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The decoded command inside an envelope.
pub fn command_of(env: &pb::SignedCommand) -> pb::Command {
    pb::Command::decode(env.command.as_slice()).expect("command decodes")
}

/// Signs `cmd` as `signer` with `key`, which need not be the key enrolled
/// for `signer`, for the cluster `cluster_id`.
pub fn sign_with(
    key: &SigningKey,
    cluster_id: &str,
    signer: &str,
    cmd: &pb::Command,
) -> pb::SignedCommand {
    ledger::sign_command(key, cluster_id, signer, cmd)
}

/// An envelope whose `command` is exactly `command` (any bytes, canonical
/// or not), validly signed by `key` as `signer` for cluster `cluster_id`:
/// only the encoding can be wrong.
pub fn sign_bytes(
    key: &SigningKey,
    cluster_id: &str,
    signer: &str,
    command: Vec<u8>,
) -> pb::SignedCommand {
    use ed25519_dalek::Signer as _;
    let signature = key
        .sign(&ledger::command_message(cluster_id, &command))
        .to_bytes()
        .to_vec();
    pb::SignedCommand {
        command,
        signer: signer.to_string(),
        signature,
    }
}

/// `cmd` encoded, with an unknown length-delimited field 99 of `junk_len`
/// bytes appended (what a verbatim store would keep).
pub fn with_unknown_field(cmd: &pb::Command, junk_len: usize) -> Vec<u8> {
    let mut bytes = cmd.encode_to_vec();
    prost::encoding::encode_key(99, prost::encoding::WireType::LengthDelimited, &mut bytes);
    prost::encoding::encode_varint(junk_len as u64, &mut bytes);
    bytes.resize(bytes.len() + junk_len, b'j');
    bytes
}

/// The signer's name, the command bytes and the body of an encoded envelope.
pub fn decode_envelope(bytes: &[u8]) -> (pb::SignedCommand, pb::Command) {
    let env = pb::SignedCommand::decode(bytes).expect("envelope decodes");
    let cmd = command_of(&env);
    (env, cmd)
}
