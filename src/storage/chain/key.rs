//! The Ed25519 key that signs job chains' heads, kept outside the workspace in the user's
//! configuration directory (`$XDG_CONFIG_HOME/perstack`, else `~/.config/perstack`), created
//! on first use with mode 0600.
//!
//! What it protects against: someone who can write the workspace (the agent, a tool, another
//! user of the share) but cannot read this file. It does not protect against anyone who holds
//! the key: they can rewrite a job and sign the new chain. Verification never creates a key.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The file holding the secret key (hex of 32 bytes) in the key directory.
const KEY_FILE: &str = "chain-signing-key";

/// The directory the key lives in: `$XDG_CONFIG_HOME/perstack`, else `$HOME/.config/perstack`.
pub(crate) fn default_key_dir() -> Option<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(xdg) = non_empty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(xdg).join("perstack"));
    }
    non_empty("HOME").map(|home| PathBuf::from(home).join(".config").join("perstack"))
}

/// The signing key of this user.
pub(crate) struct ChainKey {
    signing: SigningKey,
}

impl ChainKey {
    /// The key in `dir`, created (with its directory) when there is none yet. Two processes
    /// creating it at once agree: the file is created exclusively and the loser reads it.
    pub(crate) fn load_or_create(dir: &Path) -> io::Result<ChainKey> {
        if let Some(key) = Self::load(dir)? {
            return Ok(key);
        }
        fs::create_dir_all(dir)?;
        let secret: [u8; 32] = rand::random();
        let created = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(KEY_FILE));
        match created {
            Ok(mut file) => {
                file.write_all(hex::encode(secret).as_bytes())?;
                file.sync_all()?;
                Ok(ChainKey {
                    signing: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(dir)?
                .ok_or_else(|| io::Error::other("the chain key vanished while it was created")),
            Err(e) => Err(e),
        }
    }

    /// The key in `dir`, if there is one.
    pub(crate) fn load(dir: &Path) -> io::Result<Option<ChainKey>> {
        let text = match fs::read_to_string(dir.join(KEY_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a chain key: {e}", dir.join(KEY_FILE).display()),
            )
        })?;
        Ok(Some(ChainKey {
            signing: SigningKey::from_bytes(&secret),
        }))
    }

    /// The public half, as lowercase hex (64 characters).
    pub(crate) fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().as_bytes())
    }

    /// The signature of `message`, as lowercase hex.
    pub(crate) fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }
}

/// Whether `sig_hex` is a valid signature of `message` by the public key `key_hex`.
pub(crate) fn verify_signature(key_hex: &str, message: &[u8], sig_hex: &str) -> bool {
    let mut key = [0u8; 32];
    let mut sig = [0u8; 64];
    if hex::decode_to_slice(key_hex, &mut key).is_err()
        || hex::decode_to_slice(sig_hex, &mut sig).is_err()
    {
        return false;
    }
    let Ok(key) = VerifyingKey::from_bytes(&key) else {
        return false;
    };
    key.verify(message, &Signature::from_bytes(&sig)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_created_once_and_signs_what_its_public_half_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let key = ChainKey::load_or_create(dir.path()).unwrap();
        let again = ChainKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public_hex(), again.public_hex());
        let sig = key.sign(b"head");
        assert!(verify_signature(&key.public_hex(), b"head", &sig));
        assert!(!verify_signature(&key.public_hex(), b"other", &sig));
        let other_dir = tempfile::tempdir().unwrap();
        let other = ChainKey::load_or_create(other_dir.path()).unwrap();
        assert!(!verify_signature(&other.public_hex(), b"head", &sig));
    }
}
