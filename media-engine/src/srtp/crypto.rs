//! Cryptographic building blocks: AES counter mode (RFC 3711 4.1.1), the AES-CM key derivation
//! function (RFC 3711 4.3), HMAC-SHA1 with precomputed pads, and AES-128-GCM (RFC 7714).

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use ghash::universal_hash::UniversalHash;
use ghash::GHash;
use hmac::{Hmac, KeyInit as MacKeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Blocks of keystream generated per AES call (lets AES-NI pipeline).
const BATCH: usize = 16;

/// Blocks the AES-NI backend encrypts in parallel; batches are rounded up to a multiple of it
/// (the surplus keystream is discarded) so no block takes the slow one-at-a-time path.
const AES_PAR: usize = 8;

fn aes_batch(n: usize) -> usize {
    n.div_ceil(AES_PAR) * AES_PAR
}

/// GHASH blocks processed together by the polyval backend (its `ParBlocksSize`).
const GHASH_PAR: usize = 4;
/// GHASH blocks buffered per call (a multiple of `GHASH_PAR`).
const GHASH_BUF: usize = 16;

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

/// AES-128-GCM with a 96-bit IV and a 16-byte tag (AEAD_AES_128_GCM; NIST SP 800-38D), built
/// from AES and GHASH so that the tag mask E(K, J0) and the keystream come from one AES call and
/// the GHASH key powers are computed once per key.
#[derive(Clone)]
pub(crate) struct Gcm {
    aes: Aes128,
    ghash: GHash,
}

impl Gcm {
    pub(crate) fn new(key: &[u8; 16]) -> Self {
        let aes = Aes128::new(GenericArray::from_slice(key));
        let mut h = Block::default();
        aes.encrypt_block(&mut h);
        let ghash = GHash::new(&ghash::Key::from(block_bytes(&h)));
        Self { aes, ghash }
    }

    /// XORs `data` with the GCM keystream (counter blocks IV || 2, IV || 3, ...) and returns
    /// E(K, IV || 1), the tag mask.
    fn ctr(&self, iv: &[u8; 12], data: &mut [u8]) -> [u8; 16] {
        let mut blocks: [Block; BATCH] = Default::default();
        let mut counter: u32 = 1;
        let mut mask = [0u8; 16];
        let mut first = true;
        let mut rest = data;
        loop {
            // The first batch carries J0 in slot 0.
            let skip = usize::from(first);
            let room = (BATCH - skip) * 16;
            let take = rest.len().min(room);
            let (chunk, tail) = rest.split_at_mut(take);
            let n = skip + chunk.len().div_ceil(16);
            for block in blocks.iter_mut().take(n) {
                block[..12].copy_from_slice(iv);
                block[12..].copy_from_slice(&counter.to_be_bytes());
                counter = counter.wrapping_add(1);
            }
            self.aes.encrypt_blocks(&mut blocks[..aes_batch(n)]);
            if first {
                mask = block_bytes(&blocks[0]);
            }
            let mut words = chunk.chunks_exact_mut(16);
            for (word, ks) in (&mut words).zip(blocks[skip..n].iter()) {
                let mut w = [0u8; 16];
                w.copy_from_slice(word);
                let x = u128::from_ne_bytes(w) ^ u128::from_ne_bytes(block_bytes(ks));
                word.copy_from_slice(&x.to_ne_bytes());
            }
            let tail_bytes = words.into_remainder();
            if !tail_bytes.is_empty() {
                for (b, k) in tail_bytes.iter_mut().zip(blocks[n - 1].iter()) {
                    *b ^= k;
                }
            }
            first = false;
            rest = tail;
            if rest.is_empty() {
                return mask;
            }
        }
    }

    /// GHASH over the AAD and the ciphertext (before the tag mask).
    ///
    /// The blocks are fed in groups of [`GHASH_PAR`] so that GHASH always takes its
    /// aggregated (parallel) path: leading all-zero blocks are prepended to round the count up,
    /// which leaves the result unchanged (GHASH starts from zero, and (0 xor 0) * H = 0).
    fn ghash(&self, aad: &[u8], ciphertext: &[u8]) -> u128 {
        let total = aad.len().div_ceil(16) + ciphertext.len().div_ceil(16) + 1;
        let lead = (GHASH_PAR - total % GHASH_PAR) % GHASH_PAR;
        let mut g = self.ghash.clone();
        let mut buf: [ghash::Block; GHASH_BUF] = Default::default();
        let mut n = lead;
        let mut push = |bytes: &[u8], g: &mut GHash| {
            let block = &mut buf[n];
            if bytes.len() < 16 {
                block.fill(0);
            }
            block[..bytes.len()].copy_from_slice(bytes);
            n += 1;
            if n == GHASH_BUF {
                g.update(&buf);
                n = 0;
            }
        };
        for chunk in aad.chunks(16).chain(ciphertext.chunks(16)) {
            push(chunk, &mut g);
        }
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
        lens[8..].copy_from_slice(&((ciphertext.len() as u64) * 8).to_be_bytes());
        push(&lens, &mut g);
        if n > 0 {
            g.update(&buf[..n]);
        }
        u128::from_ne_bytes(g.finalize().into())
    }

    pub(crate) fn seal(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; 16] {
        let mask = self.ctr(iv, data);
        (self.ghash(aad, data) ^ u128::from_ne_bytes(mask)).to_ne_bytes()
    }

    /// Decrypts in place; false (and `data` restored to the ciphertext) if the tag does not
    /// verify.
    pub(crate) fn open(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        let s = self.ghash(aad, data);
        let mask = self.ctr(iv, data);
        let expected = (s ^ u128::from_ne_bytes(mask)).to_ne_bytes();
        if bool::from(expected.ct_eq(tag)) {
            return true;
        }
        // Do not leave unauthenticated plaintext behind.
        self.ctr(iv, data);
        false
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
