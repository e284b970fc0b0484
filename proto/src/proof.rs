//! The agent proves it is this run's agent before the plugin hands it the run's token.
//!
//! The agent listens on the node's network (the probe pod shares it), so any process on the node
//! that gets the port first would receive the token the plugin sends. The plugin therefore asks
//! first: it sends a fresh random nonce, and only the agent started with this run's key answers
//! with the right proof. The key comes from the token (a keyed hash of it) and is in the pod's
//! environment; the token itself never is. A process that can read the pod spec can compute the
//! proof too: that is the same reader who could already read the token's hash, and who can create
//! pods in the probe's namespace anyway.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The environment variable that holds the run key (hex) in the probe pod.
pub const RUN_KEY_ENV: &str = "NODEHEALTH_RUN_KEY";
/// Shortest and longest nonce the agent answers (the plugin sends 32 bytes).
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

const KEY_LABEL: &[u8] = b"nodehealth run key v1";
const PROOF_LABEL: &[u8] = b"nodehealth agent proof v1";

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length.
    HmacSha256::new_from_slice(key).expect("HMAC accepts any key length")
}

/// The run key of a token: what the probe pod is given instead of the token.
pub fn run_key(token: &str) -> [u8; 32] {
    let mut m = mac(token.as_bytes());
    m.update(KEY_LABEL);
    m.finalize().into_bytes().into()
}

/// The agent's answer to `nonce`.
pub fn proof(run_key: &[u8; 32], nonce: &[u8]) -> [u8; 32] {
    let mut m = mac(run_key);
    m.update(PROOF_LABEL);
    m.update(nonce);
    m.finalize().into_bytes().into()
}

/// Whether `answer` proves knowledge of the run key of `token` for `nonce` (constant time).
pub fn verify(token: &str, nonce: &[u8], answer: &[u8]) -> bool {
    let mut m = mac(&run_key(token));
    m.update(PROOF_LABEL);
    m.update(nonce);
    m.verify_slice(answer).is_ok()
}

/// The token's SHA-256 in hex: what the pod spec carries and the agent checks the token against.
pub fn token_sha256_hex(token: &str) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits.
pub fn parse_hex32(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return Err(format!(
            "expected 64 hex digits, got {} characters",
            text.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| "not a hex string".to_string())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_key_proves_and_nothing_else_does() {
        let token = "a0b1c2d3e4f5";
        let key = run_key(token);
        let nonce = [7u8; 32];
        let answer = proof(&key, &nonce);
        assert!(verify(token, &nonce, &answer));
        // Another nonce, another token, a truncated or altered answer: refused.
        assert!(!verify(token, &[8u8; 32], &answer));
        assert!(!verify("a0b1c2d3e4f6", &nonce, &answer));
        assert!(!verify(token, &nonce, &answer[..31]));
        let mut bad = answer;
        bad[0] ^= 1;
        assert!(!verify(token, &nonce, &bad));
        // The key is not the token's plain SHA-256 (which the pod spec also carries).
        use sha2::Digest;
        let sha: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        assert_ne!(key, sha);
        assert_eq!(parse_hex32(&hex(&key)).unwrap(), key);
        assert!(parse_hex32("abc").is_err());
        assert!(parse_hex32(&"é".repeat(32)).is_err());
    }

    /// HMAC-SHA256 itself, against RFC 4231 test case 2.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mut m = mac(b"Jefe");
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
