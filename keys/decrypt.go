package keys

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
)

// Formats of an encrypted message.
const (
	FormatPGPMIME = "pgp/mime" // multipart/encrypted, RFC 3156 §4
	FormatInline  = "inline"   // a text/plain body that is one armored message
)

// Decrypted is a message whose whole top level was encrypted to the list key
// and decrypted with its integrity intact.
type Decrypted struct {
	// Inner is the decrypted MIME entity (CRLF): the plaintext of a PGP/MIME
	// message, or a text/plain entity built around inline plaintext. It is
	// never merged with anything outside the ciphertext (docs/threat-model.md D2).
	Inner []byte
	// Signature is set when the plaintext carried a signature that counts:
	// a signature inside the encryption over the whole plaintext (RFC 3156
	// §6.2), or an inner multipart/signed or clear-signed top level (RFC
	// 3156 §6.1).
	Signature *Verified
	// SignatureErr says why a signature that was present does not count
	// (ErrUnknownSigner, ErrWeakHash, ErrMultipleSignatures, …); nil if
	// Signature is set or there was no signature at all.
	SignatureErr error
	// Format is FormatPGPMIME or FormatInline.
	Format string
	// CiphertextHash identifies the ciphertext for replay detection
	// (docs/threat-model.md D3): SHA-256 of the encrypted data packet's body. The PKESK
	// packets are left out on purpose: anyone can drop, reorder or
	// re-frame them without touching the ciphertext, while the encrypted
	// data packet cannot change without failing its integrity check.
	CiphertextHash [32]byte
}

// IsEncrypted reports whether the whole top level of msg is an OpenPGP
// encrypted message: a multipart/encrypted (RFC 3156 §4) or a text/plain
// body that is exactly one armored message (whitespace aside) whose
// packets are encrypted data. It decrypts nothing.
func IsEncrypted(msg []byte) bool {
	e, err := parseEntity(toCRLF(msg))
	if err != nil {
		return false
	}
	_, err = classify(e)
	return err == nil
}

// ciphertext is the payload of a message whose whole top level is
// encrypted.
type ciphertext struct {
	format  string // FormatPGPMIME or FormatInline
	charset string // of an inline text/plain body
	bin     []byte // the dearmored OpenPGP message
	sum     [32]byte
	// noMDC is set (ErrNoIntegrity) for a tag-9 ciphertext: it is wholly
	// encrypted, and refused when it comes to decrypting it.
	noMDC error
}

// classify finds the ciphertext of a wholly encrypted message (docs/threat-model.md D2,
// D9), or says why e is not one: ErrNotEncrypted, ErrPartiallyEncrypted,
// ErrUnsupportedProtocol or ErrMalformed.
func classify(e *entity) (*ciphertext, error) {
	format, block, charset, err := encryptedPayload(e)
	if err != nil {
		return nil, err
	}
	bin, err := dearmorMessage(block)
	if err != nil {
		return nil, err
	}
	sum, err := checkCiphertext(bin)
	if err != nil && !errors.Is(err, ErrNoIntegrity) {
		return nil, err
	}
	return &ciphertext{format: format, charset: charset, bin: bin, sum: sum, noMDC: err}, nil
}

// Decrypt decrypts msg with the list key. Only a message whose whole top
// level is encrypted counts (docs/threat-model.md D2, D9): a multipart/encrypted, or a
// text/plain body that is one armored PGP MESSAGE. Everything else is
// refused: ErrNotEncrypted for plain mail, ErrPartiallyEncrypted when a
// ciphertext sits beside or inside other content (EFAIL layouts).
//
// The ciphertext must be integrity-protected (SEIPD with MDC, or AEAD;
// ErrNoIntegrity for a tag-9 packet) and intact (ErrTampered), and decrypt
// to at most Options.MaxDecompressed bytes (ErrTooLarge), read to the end
// before anything is used. ErrWrongKey means it was not encrypted to list.
//
// A signature inside the encryption is checked against trusted as Verify
// does; see Decrypted.Signature and SignatureErr. An unknown signer does not
// count. Open does all of this and the signature check of plain mail in one
// pass.
func Decrypt(msg []byte, list *Key, trusted *Keyring, o Options) (*Decrypted, error) {
	if list == nil || !list.HasSecret() {
		return nil, fmt.Errorf("%w: list key", ErrNoSecretKey)
	}
	e, err := parseEntity(toCRLF(msg))
	if err != nil {
		return nil, err
	}
	ct, err := classify(e)
	if err != nil {
		return nil, err
	}
	return decryptCiphertext(ct, list, trusted, o, nil)
}

// decryptCiphertext decrypts a classified ciphertext and checks the
// signatures inside it; the decrypted entity is parsed once, counted in st.
func decryptCiphertext(ct *ciphertext, list *Key, trusted *Keyring, o Options, st *parseStats) (*Decrypted, error) {
	if list == nil || !list.HasSecret() {
		return nil, fmt.Errorf("%w: list key", ErrNoSecretKey)
	}
	if ct.noMDC != nil {
		return nil, ct.noMDC
	}
	keyring := append(openpgp.EntityList{list.e}, trusted.entities()...)
	cfg := o.config()
	md, err := openpgp.ReadMessage(bytes.NewReader(ct.bin), keyring, nil, cfg)
	if err != nil {
		return nil, decryptError(err)
	}
	if !md.IsEncrypted || md.DecryptedWith.Entity == nil || md.DecryptedWith.Entity != list.e {
		return nil, ErrWrongKey
	}
	// go-crypto checks the MDC, and the signature, only when the body has
	// been read to EOF (docs/threat-model.md D1): read it all, into a bounded buffer,
	// before anything is trusted.
	limit := o.maxPlaintext()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(md.UnverifiedBody, limit+1))
	if n > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	if err != nil {
		return nil, decryptError(err)
	}
	plaintext := buf.Bytes()

	d := &Decrypted{Format: ct.format, CiphertextHash: ct.sum}
	if ct.format == FormatPGPMIME {
		d.Inner = toCRLF(plaintext)
	} else {
		d.Inner = textEntity(plaintext, ct.charset)
	}

	outerSigned := md.IsSigned || md.Signature != nil || len(md.UnverifiedSignatures) > 0
	if outerSigned {
		v, err := messageSignature(md, plaintext, trusted, o)
		if err != nil {
			d.SignatureErr = err
		} else {
			v.Entity = d.Inner
			d.Signature = v
		}
	}
	// RFC 3156 §6.1: signed, then encrypted as a whole.
	if ie, err := parseEntityIn(d.Inner, st); err == nil && innerSignaturePresent(ie) {
		if outerSigned {
			d.Signature = nil
			d.SignatureErr = fmt.Errorf("%w: signed inside and outside the encryption", ErrMultipleSignatures)
		} else if v, err := verifyEntity(ie, trusted, o); err != nil {
			d.SignatureErr = err
		} else {
			d.Signature = v
		}
	}
	return d, nil
}

// innerSignaturePresent reports whether a decrypted entity carries any
// signature, anywhere, so that a partially signed inner message is reported
// as such rather than as unsigned.
func innerSignaturePresent(e *entity) bool {
	if e.mediaType == "multipart/signed" {
		return true
	}
	m, err := scan(e)
	return err == nil && (m.signed || m.forwardedSigned)
}

// messageSignature evaluates a signature inside the OpenPGP message, after
// the body was read to EOF.
func messageSignature(md *openpgp.MessageDetails, plaintext []byte, trusted *Keyring, o Options) (*Verified, error) {
	n := len(md.UnverifiedSignatures)
	if md.Signature != nil {
		n++
	}
	if n > 1 {
		return nil, fmt.Errorf("%w: %d signatures", ErrMultipleSignatures, n)
	}
	// go-crypto leaves SignedBy nil and SignatureError nil for an unknown
	// signer: that is not a valid signature (docs/dependencies.md §3.6).
	if md.SignedBy == nil {
		return nil, fmt.Errorf("%w: %016X", ErrUnknownSigner, md.SignedByKeyId)
	}
	k, ok := trusted.keyOf(md.SignedBy.Entity)
	if !ok { // e.g. signed by the list key itself
		return nil, fmt.Errorf("%w: %X", ErrUnknownSigner, md.SignedBy.Entity.PrimaryKey.Fingerprint)
	}
	if md.SignatureError != nil {
		var ue pgperrors.UnsupportedError
		if errors.As(md.SignatureError, &ue) && strings.Contains(ue.Error(), "hash") {
			return nil, fmt.Errorf("%w: %v", ErrWeakHash, md.SignatureError)
		}
		return nil, fmt.Errorf("%w (signer %s)", signatureError(md.SignatureError), k.fpr)
	}
	if md.Signature == nil {
		return nil, fmt.Errorf("%w: no signature packet", ErrBadSignature)
	}
	if weakHash(md.Signature.Hash) {
		return nil, fmt.Errorf("%w: %s", ErrWeakHash, hashName(md.Signature.Hash))
	}
	if err := k.check(o.now(), useSign); err != nil {
		return nil, err
	}
	return &Verified{
		Fingerprint: k.fpr,
		Key:         k,
		Signed:      md.Signature.CreationTime,
		Bytes:       plaintext,
		Hash:        md.Signature.Hash,
	}, nil
}

// encryptedPayload finds the armored ciphertext of a message whose whole top
// level is encrypted, or says why there is none.
func encryptedPayload(e *entity) (format string, block []byte, charset string, err error) {
	switch e.mediaType {
	case "multipart/encrypted":
		if p := strings.ToLower(e.params["protocol"]); p != "application/pgp-encrypted" {
			return "", nil, "", fmt.Errorf("%w: multipart/encrypted protocol %q", ErrUnsupportedProtocol, e.params["protocol"])
		}
		mp, err := e.strictMultipart()
		if err != nil {
			return "", nil, "", err
		}
		switch {
		case len(mp.parts) > 2:
			return "", nil, "", fmt.Errorf("%w: multipart/encrypted with %d parts", ErrPartiallyEncrypted, len(mp.parts))
		case len(mp.parts) < 2:
			return "", nil, "", fmt.Errorf("%w: multipart/encrypted with %d parts", ErrMalformed, len(mp.parts))
		}
		p1, err := e.part(0)
		if err != nil {
			return "", nil, "", err
		}
		if p1.mediaType != "application/pgp-encrypted" {
			return "", nil, "", fmt.Errorf("%w: first part is %s", ErrMalformed, p1.mediaType)
		}
		p2, err := e.part(1)
		if err != nil {
			return "", nil, "", err
		}
		if p2.mediaType != "application/octet-stream" {
			return "", nil, "", fmt.Errorf("%w: second part is %s", ErrMalformed, p2.mediaType)
		}
		body, err := p2.decodedBody()
		if err != nil {
			return "", nil, "", err
		}
		block, ok, extra := wholeArmor(body, armorMessage)
		switch {
		case !ok:
			return "", nil, "", fmt.Errorf("%w: no armored message in multipart/encrypted", ErrMalformed)
		case extra:
			return "", nil, "", fmt.Errorf("%w: text beside the armored message", ErrPartiallyEncrypted)
		}
		return FormatPGPMIME, block, "", nil
	case "text/plain":
		body, err := e.decodedBody()
		if err != nil {
			return "", nil, "", err
		}
		block, ok, extra := wholeArmor(body, armorMessage)
		switch {
		case ok && !extra:
			return FormatInline, block, e.params["charset"], nil
		case ok || bytes.Contains(body, markMessage):
			return "", nil, "", fmt.Errorf("%w: text beside an inline armored message", ErrPartiallyEncrypted)
		}
	}
	m, err := scan(e)
	switch {
	case err != nil:
		return "", nil, "", err
	case m.encrypted:
		return "", nil, "", fmt.Errorf("%w: %s with an encrypted part inside", ErrPartiallyEncrypted, e.mediaType)
	case m.forwardedEncrypted:
		return "", nil, "", fmt.Errorf("%w: ciphertext only inside a forwarded message", ErrNotEncrypted)
	}
	return "", nil, "", ErrNotEncrypted
}

// dearmorMessage decodes one armored PGP MESSAGE block (RFC 4880 §6.2).
func dearmorMessage(block []byte) ([]byte, error) {
	ab, err := armor.Decode(bytes.NewReader(block))
	if err != nil {
		return nil, fmt.Errorf("%w: armor: %v", ErrMalformed, err)
	}
	if ab.Type != armorMessage {
		return nil, fmt.Errorf("%w: armor type %q", ErrMalformed, ab.Type)
	}
	bin, err := io.ReadAll(ab.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: armor: %v", ErrMalformed, err)
	}
	return bin, nil
}

// checkCiphertext checks the packet sequence of an encrypted message (RFC
// 4880 §11.3): session key packets, then exactly one integrity-protected
// encrypted data packet, then nothing (marker and padding packets aside).
// It returns the SHA-256 of the encrypted data packet's body.
func checkCiphertext(bin []byte) (sum [32]byte, err error) {
	pkts, err := splitPackets(bin)
	if err != nil {
		return sum, err
	}
	i, keys := 0, 0
	for ; i < len(pkts); i++ {
		t := pkts[i].tag
		if t == tagPKESK || t == tagSKESK {
			keys++
		} else if t != tagMarker && t != tagPadding {
			break
		}
	}
	if i == len(pkts) {
		return sum, fmt.Errorf("%w: no encrypted data packet", ErrMalformed)
	}
	switch pkts[i].tag {
	case tagSEIPD, tagAEAD:
	case tagSED:
		// RFC 4880 §5.7 data without MDC: the EFAIL CFB gadgets live here.
		return sum, fmt.Errorf("%w: symmetrically encrypted data packet (tag 9)", ErrNoIntegrity)
	case tagLiteral, tagCompressed, tagOnePass, tagSignature:
		if i == 0 {
			return sum, fmt.Errorf("%w: OpenPGP message is signed or plain, not encrypted", ErrNotEncrypted)
		}
		return sum, fmt.Errorf("%w: packet %d after session keys", ErrMalformed, pkts[i].tag)
	default:
		return sum, fmt.Errorf("%w: unexpected packet %d", ErrMalformed, pkts[i].tag)
	}
	if keys == 0 {
		return sum, fmt.Errorf("%w: no session key packet", ErrMalformed)
	}
	for _, p := range pkts[i+1:] {
		if p.tag != tagMarker && p.tag != tagPadding {
			return sum, fmt.Errorf("%w: packet %d after the encrypted data", ErrMalformed, p.tag)
		}
	}
	return sha256.Sum256(pkts[i].body), nil
}

// decryptError maps go-crypto's decryption errors to ours. Errors raised
// after the session key was found mean the ciphertext does not decrypt to
// what was encrypted: tampering (go-crypto keeps these vague on purpose
// against padding oracles, and so do we).
func decryptError(err error) error {
	var de pgperrors.DecryptWithSessionKeyError
	var se pgperrors.SignatureError
	var ue pgperrors.UnsupportedError
	switch {
	case errors.Is(err, pgperrors.ErrKeyIncorrect):
		return ErrWrongKey
	case errors.Is(err, pgperrors.ErrMDCMissing):
		return fmt.Errorf("%w: %v", ErrNoIntegrity, err)
	case errors.As(err, &ue) && strings.Contains(ue.Error(), "integrity"):
		return fmt.Errorf("%w: %v", ErrNoIntegrity, err)
	case errors.As(err, &de), errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %v", ErrTampered, err)
	}
	return fmt.Errorf("%w: %v", ErrMalformed, err)
}
