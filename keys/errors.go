package keys

import "errors"

// Key state and policy. Problems, Check and the verify/decrypt paths wrap
// these with %w, so callers test them with errors.Is.
var (
	ErrKeyMissing      = errors.New("keys: no key with the pinned fingerprint")
	ErrKeyExpired      = errors.New("keys: key expired")
	ErrKeyRevoked      = errors.New("keys: key revoked")
	ErrWeakAlgorithm   = errors.New("keys: weak public-key algorithm")
	ErrSHA1Binding     = errors.New("keys: key bound with a SHA-1 (or weaker) self-signature")
	ErrNoEncryptionKey = errors.New("keys: no usable encryption subkey")
	ErrNoSigningKey    = errors.New("keys: no usable signing key")
	ErrUnsupportedKey  = errors.New("keys: unsupported key version or algorithm")
	ErrKeyExpiring     = errors.New("keys: key expires soon")
	ErrEmailMismatch   = errors.New("keys: pinned address is not a user ID of the key")
	ErrBadFingerprint  = errors.New("keys: fingerprint is not 40 hex digits")
	ErrNoSecretKey     = errors.New("keys: secret key material missing")

	// List key files (docs/threat-model.md D10).
	ErrInsecurePermissions = errors.New("keys: key file is group- or world-accessible")
	ErrPassphrase          = errors.New("keys: wrong or missing passphrase")
	ErrNotProtected        = errors.New("keys: key file is not passphrase-protected but a passphrase was given")
)

// Verification outcomes (docs/threat-model.md D4, E2, E4). Every way a signature can fail
// to count has its own sentinel so the audit log can say why.
var (
	ErrNotSigned          = errors.New("keys: not signed")
	ErrPartiallySigned    = errors.New("keys: only part of the message is signed")
	ErrForwarded          = errors.New("keys: signature is inside a forwarded message/rfc822 part")
	ErrMultipleSignatures = errors.New("keys: more than one signature")
	ErrUnknownSigner      = errors.New("keys: signer is not a trusted key")
	ErrWeakHash           = errors.New("keys: signature uses a weak hash algorithm")
	ErrBadSignature       = errors.New("keys: bad signature")
	ErrSignatureExpired   = errors.New("keys: signature expired")
)

// Decryption outcomes (docs/threat-model.md D1, D2, D9, C5).
var (
	ErrNotEncrypted        = errors.New("keys: not encrypted")
	ErrPartiallyEncrypted  = errors.New("keys: encrypted part beside unencrypted parts")
	ErrNoIntegrity         = errors.New("keys: ciphertext has no integrity protection")
	ErrTampered            = errors.New("keys: ciphertext failed its integrity check")
	ErrTooLarge            = errors.New("keys: plaintext exceeds the size limit")
	ErrWrongKey            = errors.New("keys: not encrypted to this key")
	ErrMalformed           = errors.New("keys: malformed message")
	ErrBoundaryInContent   = errors.New("keys: MIME boundary occurs in the content")
	ErrNot7Bit             = errors.New("keys: content to be signed is not 7-bit")
	ErrUnsupportedProtocol = errors.New("keys: unsupported multipart protocol")
)
