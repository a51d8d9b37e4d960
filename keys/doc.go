// Package keys holds embargo's OpenPGP: list keys, pinned member keys, and
// PGP/MIME signing, encryption, verification and decryption, all
// interoperable with GnuPG 2.2.
//
// # Trust model
//
// Each list (security@, distributors@, announce@) has its own key pair,
// generated at first start. Member keys are trusted only by pinning: the
// roster names each member's primary key fingerprint, and a key is used only
// if a key file in the key directory has that fingerprint (LoadPinned). Keys
// are never looked up by address, never taken from mail (Autocrypt, attached
// keys), never fetched from keyservers or WKD, and third-party
// certifications are stripped on import: there is no web of trust.
//
// A signature counts only if it is the one signature over the whole top
// level of what is checked, by a pinned key usable at the time of checking,
// with a SHA-2 or SHA-3 hash. Signed and unsigned content side by side, a
// signature inside a forwarded message/rfc822, two signatures, SHA-1, MD5 or
// RIPEMD-160 hashes, RSA under 2048 bits, DSA, ElGamal, v3 keys, SHA-1
// binding signatures, and expired or revoked keys are each refused with
// their own error (see Verify).
//
// A message counts as encrypted only if its whole top level is the
// ciphertext, and its plaintext is used only after it was read to the end
// with its integrity check passed (see Decrypt). Decrypted content is
// returned alone, never merged with the parts around it (EFAIL).
//
// Inbound mail is opened once (Open): one call classifies the message,
// decrypts it when its whole top level is encrypted to the list key, and
// checks the one signature that may count, parsing each MIME entity once.
// Its result says why a message was not decrypted and, with a SigStatus of
// its own for each case, why a signature does not count.
//
// Outgoing mail is encrypted to exactly one recipient key per message
// (AES-256, SEIPD v1 with MDC, no AEAD and no v6 keys, so that GnuPG 2.2
// reads it), optionally signed inside by a list key; there is no plaintext
// fallback. Announcements are PGP/MIME signed.
//
// Threat references (docs/threat-model.md): D1 integrity, D2/D9 EFAIL and
// encryption spoofing, D3 ciphertext hashes for replay detection, D4 weak
// algorithms, D5 pinning, D6 no plaintext fallback, D7 protected headers,
// C5 decompression bombs, E2 partial signing, E4 key state.
//
// The package uses the v1 API of ProtonMail/go-crypto plus its own checks
// for what that API does not enforce (weak hashes and keys), and a
// plaintext cap with go-crypto's decompression limit behind it. It has no
// package-level mutable state; the clock and randomness come from Options.
//
// # Standards
//
//   - RFC 4880, OpenPGP Message Format: packets (§4, §5), armor (§6),
//     cleartext signatures (§7), transferable keys (§11), fingerprints
//     (§12.2).
//   - RFC 9580, OpenPGP (2024): hash and key algorithm guidance, issuer
//     fingerprints. SEIPD v2 (AEAD) is decrypted but never produced; v5
//     and v6 keys are refused (GnuPG 2.2 cannot use them).
//   - RFC 3156, MIME Security with OpenPGP: multipart/encrypted (§4),
//     multipart/signed with micalg (§5), signed then encrypted (§6.1),
//     signed and encrypted in one step (§6.2).
//   - RFC 2045, RFC 2046: MIME entities, transfer encodings, multipart
//     delimiters (§5.1.1).
//   - draft-autocrypt-lamps-protected-headers: protected-headers="v1".
package keys
