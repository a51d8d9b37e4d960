package keys

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// Encrypt returns a complete message: outer's fields over a PGP/MIME
// multipart/encrypted body (RFC 3156 §4) holding inner encrypted to exactly
// one recipient key, to, and, if signer is not nil, signed by signer inside
// the encryption in one step (RFC 3156 §6.2).
//
// outer is seen by every relay: give it a generic Subject and put the real
// one in inner (see ProtectHeaders; threats D7). The ciphertext is one PKESK
// for to's current encryption subkey and a SEIPD v1 packet with MDC,
// AES-256, no compression (RFC 4880 §5.1, §5.13, §5.14): what gpg 2.2
// reads. A recipient key that fails Check-for-encryption at o.Now is an
// error; there is no plaintext fallback (threats D6).
func Encrypt(outer mail.Header, inner []byte, to *Key, signer *Key, o Options) ([]byte, error) {
	inner = toCRLF(inner)
	if err := checkInner(inner); err != nil {
		return nil, err
	}
	armored, err := encryptMessage(inner, to, signer, o)
	if err != nil {
		return nil, err
	}
	boundary, err := o.boundary()
	if err != nil {
		return nil, err
	}
	if bytes.Contains(armored, []byte("--"+boundary)) {
		return nil, ErrBoundaryInContent
	}

	var b bytes.Buffer
	b.Grow(len(armored) + 2048)
	if err := writeOuter(&b, outer, "multipart/encrypted", map[string]string{
		"boundary": boundary,
		"protocol": "application/pgp-encrypted",
	}); err != nil {
		return nil, fmt.Errorf("keys: encrypt: %w", err)
	}
	b.WriteString("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n")
	// RFC 3156 §4: part 1 is application/pgp-encrypted with "Version: 1";
	// part 2 is application/octet-stream holding the armored message.
	b.WriteString("--" + boundary + "\r\n")
	b.WriteString("Content-Type: application/pgp-encrypted\r\n")
	b.WriteString("Content-Description: PGP/MIME version identification\r\n\r\n")
	b.WriteString("Version: 1\r\n\r\n")
	b.WriteString("--" + boundary + "\r\n")
	b.WriteString("Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n")
	b.WriteString("Content-Description: OpenPGP encrypted message\r\n")
	b.WriteString("Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n")
	b.Write(armored)
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return b.Bytes(), nil
}

// encryptMessage builds the OpenPGP message by hand from go-crypto's packet
// writers rather than openpgp.Encrypt, to fix the cipher at AES-256 (the
// library picks from the recipient's preferences, AES-128 if AES-256 is not
// listed) and to keep compression and file names out.
func encryptMessage(plaintext []byte, to, signer *Key, o Options) ([]byte, error) {
	now := o.now()
	if to == nil {
		return nil, fmt.Errorf("%w: no recipient", ErrNoEncryptionKey)
	}
	if err := to.check(now, useEncrypt); err != nil {
		return nil, fmt.Errorf("keys: encrypt to %s: %w", to.fpr, err)
	}
	ek, ok := to.e.EncryptionKey(now)
	if !ok { // check has just said otherwise; keep the library honest
		return nil, fmt.Errorf("%w: %s", ErrNoEncryptionKey, to.fpr)
	}
	var sk *packet.PrivateKey
	if signer != nil {
		if err := canSign(signer, now); err != nil {
			return nil, fmt.Errorf("keys: sign with %s: %w", signer.fpr, err)
		}
		k, _ := signer.e.SigningKey(now)
		sk = k.PrivateKey
	}
	cfg := o.config()

	const cipher = packet.CipherAES256
	sessionKey := make([]byte, cipher.KeySize())
	if _, err := io.ReadFull(cfg.Random(), sessionKey); err != nil {
		return nil, fmt.Errorf("keys: session key: %w", err)
	}
	var bin bytes.Buffer
	bin.Grow(len(plaintext) + 1024) // PKESK, headers, MDC, signature
	// v3 PKESK (aeadSupported=false): RFC 4880 §5.1.
	if err := packet.SerializeEncryptedKeyAEAD(&bin, ek.PublicKey, cipher, false, sessionKey, cfg); err != nil {
		return nil, fmt.Errorf("keys: encrypt session key: %w", err)
	}
	// SEIPD v1 with MDC (RFC 4880 §5.13, §5.14); no AEAD, which gpg 2.2
	// cannot read.
	payload, err := packet.SerializeSymmetricallyEncrypted(&bin, cipher, false, packet.CipherSuite{}, sessionKey, cfg)
	if err != nil {
		return nil, fmt.Errorf("keys: encrypt: %w", err)
	}

	var sig *packet.Signature
	if sk != nil {
		// RFC 4880 §11.3: one-pass signature, literal data, signature.
		hash := signingHash(&sk.PublicKey)
		ops := &packet.OnePassSignature{
			Version:    3,
			SigType:    packet.SigTypeBinary,
			Hash:       hash,
			PubKeyAlgo: sk.PubKeyAlgo,
			KeyId:      sk.KeyId,
			IsLast:     true,
		}
		if err := ops.Serialize(payload); err != nil {
			return nil, fmt.Errorf("keys: encrypt: %w", err)
		}
		keyID := sk.KeyId
		sig = &packet.Signature{
			Version:           4,
			SigType:           packet.SigTypeBinary,
			PubKeyAlgo:        sk.PubKeyAlgo,
			Hash:              hash,
			CreationTime:      now,
			IssuerKeyId:       &keyID,
			IssuerKeyVersion:  4,
			IssuerFingerprint: sk.Fingerprint,
		}
	}
	// Binary literal, no file name, no date: nothing about the content
	// outside what the recipient needs (threats D7).
	lit, err := packet.SerializeLiteral(nopCloser{payload}, true, "", 0)
	if err != nil {
		return nil, fmt.Errorf("keys: encrypt: %w", err)
	}
	if _, err := lit.Write(plaintext); err != nil {
		return nil, fmt.Errorf("keys: encrypt: %w", err)
	}
	if err := lit.Close(); err != nil {
		return nil, fmt.Errorf("keys: encrypt: %w", err)
	}
	if sig != nil {
		h, err := sig.PrepareSign(cfg)
		if err != nil {
			return nil, fmt.Errorf("keys: sign: %w", err)
		}
		h.Write(plaintext)
		if err := sig.Sign(h, sk, cfg); err != nil {
			return nil, fmt.Errorf("keys: sign: %w", err)
		}
		if err := sig.Serialize(payload); err != nil {
			return nil, fmt.Errorf("keys: sign: %w", err)
		}
	}
	if err := payload.Close(); err != nil { // writes the MDC packet
		return nil, fmt.Errorf("keys: encrypt: %w", err)
	}

	var b bytes.Buffer
	b.Grow(bin.Len()*4/3 + bin.Len()/32 + 256) // base64, line ends, armor lines
	w, err := armor.Encode(&b, armorMessage, nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(bin.Bytes()); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return toCRLF(b.Bytes()), nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// protectedFields are the header fields ProtectHeaders copies into the
// inner entity (draft-autocrypt-lamps-protected-headers §2).
var protectedFields = map[string]bool{
	"subject": true, "from": true, "to": true, "cc": true, "reply-to": true,
	"date": true, "message-id": true, "in-reply-to": true, "references": true,
	"followup-to": true,
}

// ProtectHeaders returns inner with protected copies of h's Subject, From,
// To, Cc, Reply-To, Date, Message-ID, In-Reply-To, References and
// Followup-To fields placed in its header, and protected-headers="v1" added
// to its Content-Type (draft-autocrypt-lamps-protected-headers). Encrypt
// inner afterwards and give the outer header a generic Subject: the real one
// then travels only inside the ciphertext (threats D7). Other fields of h
// are ignored; fields inner already has are kept.
func ProtectHeaders(inner []byte, h mail.Header) ([]byte, error) {
	inner = toCRLF(inner)
	e, err := parseEntity(inner)
	if err != nil {
		return nil, fmt.Errorf("keys: inner entity: %w", err)
	}
	// Protected copies first, in h's order; written with go-message so that
	// no value can carry CR or LF.
	var prot textproto.Header
	fields := h.Fields()
	var keys, vals []string
	for fields.Next() {
		if protectedFields[strings.ToLower(fields.Key())] && !e.header.Has(fields.Key()) {
			keys = append(keys, fields.Key())
			vals = append(vals, fields.Value())
		}
	}
	// Add prepends, so add in reverse to keep the order.
	for i := len(keys) - 1; i >= 0; i-- {
		prot.Add(keys[i], vals[i])
	}
	mh := message.Header{Header: e.header.Copy()}
	t, params, err := mh.ContentType()
	if err != nil {
		t, params = "text/plain", map[string]string{}
	}
	if params == nil {
		params = map[string]string{}
	}
	params["protected-headers"] = "v1"
	mh.SetContentType(t, params)

	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, prot); err != nil {
		return nil, fmt.Errorf("keys: protected headers: %w", err)
	}
	b.Truncate(b.Len() - 2) // WriteHeader ends with the blank line
	if err := textproto.WriteHeader(&b, mh.Header); err != nil {
		return nil, fmt.Errorf("keys: inner header: %w", err)
	}
	b.Write(e.body)
	return b.Bytes(), nil
}
