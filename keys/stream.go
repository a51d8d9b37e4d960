package keys

import (
	"bytes"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// EncryptStream writes to w the message Encrypt returns for outer and the
// inner entity read from inner, holding neither the plaintext nor the
// ciphertext whole: a large report is read, encrypted, armored and written a
// few kilobytes at a time, and the caller decides where the result goes.
//
// inner must already be CRLF-canonical (ProtectHeadersReader over a rendered
// entity is); a bare CR or LF in it is an ErrMalformed error. On any error,
// what was written to w is not a message and must be thrown away.
func EncryptStream(w io.Writer, outer mail.Header, inner io.Reader, to, signer *Key, o Options) error {
	fields, err := fieldsOf(outer)
	if err != nil {
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	return encryptStream(w, bytes.NewBuffer(fields), inner, to, signer, o)
}

// encryptStream writes head (the outer header fields, without MIME fields),
// the PGP/MIME fields and parts, and the armored message.
func encryptStream(w io.Writer, head *bytes.Buffer, inner io.Reader, to, signer *Key, o Options) error {
	boundary, err := o.boundary()
	if err != nil {
		return err
	}
	if err := writeEncryptedFields(head, boundary); err != nil {
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	// The same parts as Encrypt: RFC 3156 §4.
	head.WriteString("This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n")
	head.WriteString("--" + boundary + "\r\n")
	head.WriteString("Content-Type: application/pgp-encrypted\r\n")
	head.WriteString("Content-Description: PGP/MIME version identification\r\n\r\n")
	head.WriteString("Version: 1\r\n\r\n")
	head.WriteString("--" + boundary + "\r\n")
	head.WriteString("Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n")
	head.WriteString("Content-Description: OpenPGP encrypted message\r\n")
	head.WriteString("Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n")
	if _, err := w.Write(head.Bytes()); err != nil {
		return err
	}
	guard := &delimGuard{w: w, delim: []byte("--" + boundary)}
	if err := encryptArmored(guard, &crlfChecker{r: inner}, to, signer, o); err != nil {
		return err
	}
	if guard.found {
		return ErrBoundaryInContent
	}
	_, err = io.WriteString(w, "\r\n--"+boundary+"--\r\n")
	return err
}

// encryptArmored writes the ASCII-armored OpenPGP message of plaintext to w,
// CRLF line ends (armorWriter):
// one PKESK for to's current encryption subkey and a SEIPD v1 packet with
// MDC, AES-256, no compression (RFC 4880 §5.1, §5.13, §5.14), which gpg 2.2
// reads, holding, if signer is not nil, a one-pass signature, the literal
// data and the signature (RFC 4880 §11.3). The literal data is written with
// partial body lengths as plaintext is read.
func encryptArmored(w io.Writer, plaintext io.Reader, to, signer *Key, o Options) error {
	now := o.now()
	if to == nil {
		return fmt.Errorf("%w: no recipient", ErrNoEncryptionKey)
	}
	if err := to.check(now, useEncrypt); err != nil {
		return fmt.Errorf("keys: encrypt to %s: %w", to.fpr, err)
	}
	ek, ok := to.e.EncryptionKey(now)
	if !ok { // check has just said otherwise; keep the library honest
		return fmt.Errorf("%w: %s", ErrNoEncryptionKey, to.fpr)
	}
	var sk *packet.PrivateKey
	if signer != nil {
		if err := canSign(signer, now); err != nil {
			return fmt.Errorf("keys: sign with %s: %w", signer.fpr, err)
		}
		k, _ := signer.e.SigningKey(now)
		sk = k.PrivateKey
	}
	cfg := o.config()

	const cipher = packet.CipherAES256
	sessionKey := make([]byte, cipher.KeySize())
	if _, err := io.ReadFull(cfg.Random(), sessionKey); err != nil {
		return fmt.Errorf("keys: session key: %w", err)
	}
	aw := newArmorWriter(w, armorMessage)
	// v3 PKESK (aeadSupported=false): RFC 4880 §5.1.
	if err := packet.SerializeEncryptedKeyAEAD(aw, ek.PublicKey, cipher, false, sessionKey, cfg); err != nil {
		return fmt.Errorf("keys: encrypt session key: %w", err)
	}
	// SEIPD v1 with MDC; no AEAD, which gpg 2.2 cannot read.
	payload, err := packet.SerializeSymmetricallyEncrypted(aw, cipher, false, packet.CipherSuite{}, sessionKey, cfg)
	if err != nil {
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	var sig *packet.Signature
	if sk != nil {
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
			return fmt.Errorf("keys: encrypt: %w", err)
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
	// outside what the recipient needs (docs/threat-model.md D7).
	lit, err := packet.SerializeLiteral(nopCloser{payload}, true, "", 0)
	if err != nil {
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	dst := io.Writer(lit)
	var h hash.Hash
	if sig != nil {
		if h, err = sig.PrepareSign(cfg); err != nil {
			return fmt.Errorf("keys: sign: %w", err)
		}
		dst = io.MultiWriter(lit, h)
	}
	buf := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(dst, plaintext, *buf)
	copyBufs.Put(buf)
	if err != nil {
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	if err := lit.Close(); err != nil {
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	if sig != nil {
		if err := sig.Sign(h, sk, cfg); err != nil {
			return fmt.Errorf("keys: sign: %w", err)
		}
		if err := sig.Serialize(payload); err != nil {
			return fmt.Errorf("keys: sign: %w", err)
		}
	}
	if err := payload.Close(); err != nil { // writes the MDC packet
		return fmt.Errorf("keys: encrypt: %w", err)
	}
	return aw.Close()
}

// ProtectHeadersReader is ProtectHeaders for an entity read from inner: it
// reads the entity's header fields and returns a reader of the entity with
// the protected copies of h's fields in front and protected-headers="v1" in
// its Content-Type, then the rest of inner, unread until then.
func ProtectHeadersReader(inner io.Reader, h mail.Header) (io.Reader, error) {
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, h.Header.Header); err != nil {
		return nil, fmt.Errorf("keys: protected headers: %w", err)
	}
	return ProtectHeaderFields(inner, b.Bytes()[:b.Len()-2])
}

func lower(s string) string { return string(bytes.ToLower([]byte(s))) }

// crlfChecker passes a reader through and fails on a CR not followed by LF
// or an LF not preceded by CR: what is signed and encrypted must be the
// canonical form (RFC 3156 §5), and a stream cannot be fixed up afterwards.
type crlfChecker struct {
	r      io.Reader
	prevCR bool
	off    int64
}

func (c *crlfChecker) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		if i := crlfViolation(p[:n], c.prevCR); i >= 0 {
			return 0, fmt.Errorf("%w: bare CR or LF at offset %d of the inner entity", ErrMalformed, c.off+int64(i))
		}
		c.prevCR = p[n-1] == '\r'
	}
	c.off += int64(n)
	if err == io.EOF && c.prevCR {
		return 0, fmt.Errorf("%w: the inner entity ends with a bare CR", ErrMalformed)
	}
	return n, err
}

// copyBufs are the buffers encryptArmored copies the plaintext through:
// io.Copy would allocate 32 KiB per message.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// delimGuard passes writes through and notes whether delim occurs in them,
// across write boundaries (RFC 2046 §5.1.1: the boundary must not occur in
// the body it delimits).
type delimGuard struct {
	w     io.Writer
	delim []byte
	tail  []byte
	found bool
}

func (g *delimGuard) Write(p []byte) (int, error) {
	if !g.found {
		keep := len(g.delim) - 1
		// A delimiter across the previous writes and this one starts in tail.
		edge := append(g.tail, p[:min(len(p), keep)]...)
		g.found = bytes.Contains(edge, g.delim) || containsDelim(p, g.delim)
		if len(p) >= keep {
			g.tail = append(g.tail[:0], p[len(p)-keep:]...)
		} else {
			g.tail = append(g.tail, p...)
			g.tail = g.tail[max(0, len(g.tail)-keep):]
		}
	}
	return g.w.Write(p)
}

// containsDelim is bytes.Contains(p, delim) for a MIME delimiter, which
// starts with "--": it looks for the first byte alone (vectorised), which
// base64 never holds and armor only in its first and last lines, and
// compares the rest only there. bytes.Contains would soon fall back to a
// brute-force search, the armor lines starting with "--".
func containsDelim(p, delim []byte) bool {
	for i := 0; i < len(p); i++ {
		k := bytes.IndexByte(p[i:], delim[0])
		if k < 0 {
			return false
		}
		i += k
		if bytes.HasPrefix(p[i:], delim) {
			return true
		}
	}
	return false
}

// writeEncryptedFields writes the MIME fields of a multipart/encrypted
// message (RFC 3156 §4). A boundary of ours ("=_" and 32 hex digits) needs
// no quoting rules applied: the fields are written as go-message writes
// them, from a template; any other goes through go-message.
func writeEncryptedFields(b *bytes.Buffer, boundary string) error {
	if !ourBoundary(boundary) {
		return writeMIMEFields(b, "multipart/encrypted", map[string]string{
			"boundary": boundary,
			"protocol": "application/pgp-encrypted",
		})
	}
	b.WriteString("Mime-Version: 1.0\r\nContent-Type: multipart/encrypted;\r\n boundary=\"")
	b.WriteString(boundary)
	b.WriteString("\";\r\n protocol=\"application/pgp-encrypted\"\r\n\r\n")
	return nil
}

// ourBoundary reports whether b has the form Options.boundary makes.
func ourBoundary(b string) bool {
	if len(b) != 34 || b[:2] != "=_" {
		return false
	}
	for i := 2; i < len(b); i++ {
		if c := b[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
