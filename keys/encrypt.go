package keys

import (
	"bytes"
	"fmt"
	"io"
	"strings"

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
// one in inner (see ProtectHeaders; docs/threat-model.md D7). The ciphertext is one PKESK
// for to's current encryption subkey and a SEIPD v1 packet with MDC,
// AES-256, no compression (RFC 4880 §5.1, §5.13, §5.14): what gpg 2.2
// reads. A recipient key that fails Check-for-encryption at o.Now is an
// error; there is no plaintext fallback (docs/threat-model.md D6).
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

// encryptMessage builds the armored OpenPGP message (encryptArmored in
// stream.go: the one place that fixes the packets) in memory, CRLF line ends.
func encryptMessage(plaintext []byte, to, signer *Key, o Options) ([]byte, error) {
	var b bytes.Buffer
	b.Grow(len(plaintext)*11/8 + 1024) // base64 and line ends, packet headers
	if err := encryptArmored(&b, bytes.NewReader(plaintext), to, signer, o); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
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
// then travels only inside the ciphertext (docs/threat-model.md D7). Other fields of h
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
