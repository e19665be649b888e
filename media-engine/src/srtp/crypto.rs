//! Cryptographic building blocks: AES counter mode (RFC 3711 4.1.1), the AES-CM key derivation
//! function (RFC 3711 4.3), HMAC-SHA1 with precomputed pads, and AES-128-GCM (RFC 7714).

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use hmac::{Hmac, KeyInit as MacKeyInit, Mac};
use sha1::Sha1;

/// Blocks of keystream generated per AES call (lets AES-NI pipeline).
const BATCH: usize = 16;

/// Blocks the AES-NI backend encrypts in parallel; batches are rounded up to a multiple of it
/// (the surplus keystream is discarded) so no block takes the slow one-at-a-time path.
const AES_PAR: usize = 8;

fn aes_batch(n: usize) -> usize {
    n.div_ceil(AES_PAR) * AES_PAR
}

type Block = GenericArray<u8, aes::cipher::consts::U16>;

fn block_bytes(b: &Block) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(b);
    out
}

/// AES-128 in counter mode as SRTP uses it: a 128-bit IV whose low 16 bits are the block counter.
#[derive(Clone)]
pub(crate) struct AesCm {
    aes: Aes128,
}

impl AesCm {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        Self {
            aes: Aes128::new(GenericArray::from_slice(key)),
        }
    }

    /// XORs `data` with the keystream starting at `iv` (whose two low bytes must be zero).
    /// Keystream past 2^16 blocks (1 MiB) would wrap the 16-bit block counter; callers only
    /// pass packets, which are far smaller.
    pub(crate) fn apply_keystream(&self, iv: &[u8; 16], data: &mut [u8]) {
        let base = u128::from_be_bytes(*iv);
        let mut counter: u16 = 0;
        let mut blocks: [Block; BATCH] = Default::default();
        for chunk in data.chunks_mut(16 * BATCH) {
            let n = chunk.len().div_ceil(16);
            for block in blocks.iter_mut().take(n) {
                let ctr = (base & !0xffff) | u128::from((base as u16).wrapping_add(counter));
                block.copy_from_slice(&ctr.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.aes.encrypt_blocks(&mut blocks[..aes_batch(n)]);
            let mut words = chunk.chunks_exact_mut(16);
            for (word, ks) in (&mut words).zip(blocks.iter()) {
                let mut w = [0u8; 16];
                w.copy_from_slice(word);
                let x = u128::from_ne_bytes(w) ^ u128::from_ne_bytes(block_bytes(ks));
                word.copy_from_slice(&x.to_ne_bytes());
            }
            let tail = words.into_remainder();
            if !tail.is_empty() {
                let ks = &blocks[n - 1];
                for (b, k) in tail.iter_mut().zip(ks.iter()) {
                    *b ^= k;
                }
            }
        }
    }

    /// Writes raw keystream (the key derivation function of RFC 3711 4.3.3).
    pub(crate) fn keystream(&self, iv: &[u8; 16], out: &mut [u8]) {
        out.fill(0);
        self.apply_keystream(iv, out);
    }
}

/// SRTP key derivation (RFC 3711 4.3.1 with key_derivation_rate 0, so r = 0).
/// `master_salt` is 14 bytes (AES-CM profiles) or 12 bytes (AEAD_AES_128_GCM, RFC 7714 11:
/// padded with zeros on the right to the 112 bits the PRF expects, as libsrtp does).
pub(crate) fn derive(master_key: &[u8; 16], master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    let n = master_salt.len().min(14);
    iv[..n].copy_from_slice(&master_salt[..n]);
    // key_id = label || r (48 bits of r, here 0) is right-aligned in the 112-bit x:
    // the label lands in byte 7.
    iv[7] ^= label;
    AesCm::new(master_key).keystream(&iv, out);
}

/// HMAC-SHA1 keyed once; each use clones the precomputed inner/outer state.
#[derive(Clone)]
pub(crate) struct HmacSha1 {
    keyed: Hmac<Sha1>,
}

impl HmacSha1 {
    pub(crate) fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length; the error branch cannot be taken.
        let keyed = match <Hmac<Sha1> as MacKeyInit>::new_from_slice(key) {
            Ok(m) => m,
            Err(_) => <Hmac<Sha1> as MacKeyInit>::new(&Default::default()),
        };
        Self { keyed }
    }

    /// HMAC over the concatenation of `parts`.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut m = self.keyed.clone();
        for p in parts {
            m.update(p);
        }
        let out = m.finalize().into_bytes();
        let mut tag = [0u8; 20];
        tag.copy_from_slice(&out);
        tag
    }
}

/// AES-128-GCM with a 96-bit IV and a 16-byte tag (AEAD_AES_128_GCM; NIST SP 800-38D), on
/// ring's AEAD (AES-NI + CLMUL/AVX code paths): about twice the software AES + GHASH it
/// replaced.
#[derive(Clone)]
pub(crate) struct Gcm {
    key: ring::aead::LessSafeKey,
}

impl Gcm {
    /// `None` only if ring refuses the key (it takes any 16-byte key).
    pub(crate) fn new(key: &[u8; 16]) -> Option<Self> {
        let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, key).ok()?;
        Some(Self {
            key: ring::aead::LessSafeKey::new(unbound),
        })
    }

    /// Encrypts `data` in place; returns the tag.
    pub(crate) fn seal(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let nonce = ring::aead::Nonce::assume_unique_for_key(*iv);
        let mut out = [0u8; 16];
        // Sealing only fails for inputs longer than GCM allows (2^36 bytes).
        if let Ok(tag) =
            self.key
                .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), data)
        {
            out.copy_from_slice(tag.as_ref());
        }
        out
    }

    /// Decrypts in place; false if the tag does not verify (`data` is then unspecified:
    /// ring zeroes it, so no unauthenticated plaintext is left behind).
    pub(crate) fn open(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        let Ok(tag) = <[u8; 16]>::try_from(tag) else {
            return false;
        };
        let nonce = ring::aead::Nonce::assume_unique_for_key(*iv);
        self.key
            .open_in_place_separate_tag(
                nonce,
                ring::aead::Aad::from(aad),
                ring::aead::Tag::from(tag),
                data,
                0..,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 Appendix B.2: AES-CM keystream.
    #[test]
    fn rfc3711_b2_keystream() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let salt = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&salt);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        // The RFC lists counters 0000..0002 and FEFF..FF01.
        let mut ks = vec![0u8; 16 * 0xFF02];
        AesCm::new(&key).keystream(&iv, &mut ks);
        assert_eq!(ks[..16], hex("E03EAD0935C95E80E166B16DD92B4EB4")[..]);
        assert_eq!(ks[16..32], hex("D23513162B02D0F72A43A2FE4A5F97AB")[..]);
        assert_eq!(ks[32..48], hex("41E95B3BB0A2E8DD477901E4FCA894C0")[..]);
        let n = ks.len();
        assert_eq!(
            ks[n - 48..n - 32],
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4")[..]
        );
        assert_eq!(
            ks[n - 32..n - 16],
            hex("362B7C3C6773516318A077D7FC5073AE")[..]
        );
        assert_eq!(ks[n - 16..], hex("6A2CC3787889374FBEB4C81B17BA6C44")[..]);
    }

    /// RFC 3711 Appendix B.3: key derivation.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let mk: [u8; 16] = hex("E1F97A0D3E018BE0D64FA32C06DE4139").try_into().unwrap();
        let ms = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut enc = [0u8; 16];
        derive(&mk, &ms, 0, &mut enc);
        assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&mk, &ms, 2, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 94];
        derive(&mk, &ms, 1, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4
                 8F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF7227098
                 6371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E47403576
                 6B68642C59BBFC2F34DB60DBDFB2")
        );
    }
}
