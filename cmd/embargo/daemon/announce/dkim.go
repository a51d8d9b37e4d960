package announce

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// DKIM signs the copies the fan-out sends over its own connections
// (Options.SMTP): the same key, domain and fields as the queue's
// DKIMRelay, relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4).
//
// With one-click, every copy has its own List-Unsubscribe, and RFC 8058
// §4 wants it and List-Unsubscribe-Post under a valid DKIM signature: each
// copy is signed. The body is the same in every copy, so its hash (bh=) is
// computed once per release, and so is the canonical form of every shared
// header field; a copy costs the hash of its header fields and one
// signature.
type DKIM struct {
	Domain   string        // d=
	Selector string        // s=
	Signer   crypto.Signer // RSA (at least 2048 bits) or Ed25519 (RFC 8463)
	// Headers are the fields signed, in order (h=); a name listed more
	// often than the message has it is oversigned (RFC 6376 §5.4.2).
	// Default queue.DKIMHeaders.
	Headers []string
}

// dkimSigner signs the copies of one message: shared is its header after
// the copy's own fields, and the body.
type dkimSigner struct {
	signer crypto.Signer
	opts   crypto.SignerOpts
	pieces []dkimPiece
	field  string // the DKIM-Signature field up to "b=", as written
	canon  []byte // its relaxed form with an empty b=, no CRLF (RFC 6376 §3.7)
}

// dkimPiece is one entry of h=: the canonical form of a shared field, or
// a field of the copy's own header (found per copy, bottom-up).
type dkimPiece struct {
	fixed []byte
	own   string // lower-case name; "" with fixed
	nth   int    // the nth instance of own from the bottom of the copy's fields
}

func newDKIMSigner(d *DKIM, msg []byte) (*dkimSigner, error) {
	if d.Domain == "" || d.Selector == "" || d.Signer == nil {
		return nil, errors.New("announce: dkim: domain, selector and key are required")
	}
	s := &dkimSigner{signer: d.Signer}
	var algo string
	switch d.Signer.Public().(type) {
	case *rsa.PublicKey:
		algo, s.opts = "rsa-sha256", crypto.SHA256 // RFC 8301: never rsa-sha1
	case ed25519.PublicKey:
		algo, s.opts = "ed25519-sha256", crypto.Hash(0) // RFC 8463 §3: Ed25519 over the SHA-256 hash
	default:
		return nil, fmt.Errorf("announce: dkim: %T keys are not supported", d.Signer.Public())
	}
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, errors.New("announce: dkim: message has no header/body separator")
	}
	shared := map[string][][]byte{} // lower-case name → canonical fields, top to bottom
	for _, f := range headerFields(msg[:end+2]) {
		name := fieldName(f)
		shared[name] = append(shared[name], relaxedField(f))
	}
	names := d.Headers
	if names == nil {
		names = queue.DKIMHeaders
	}
	uses := map[string]int{}
	for _, n := range names {
		n = strings.ToLower(n)
		k := uses[n]
		uses[n]++
		// Instances are taken from the bottom up (RFC 6376 §5.4.2): first
		// the shared fields, then the copy's own, which sit above them.
		if fs := shared[n]; k < len(fs) {
			s.pieces = append(s.pieces, dkimPiece{fixed: fs[len(fs)-1-k]})
		} else {
			s.pieces = append(s.pieces, dkimPiece{own: n, nth: k - len(fs)})
		}
	}
	bh := sha256.Sum256(relaxedBody(msg[end+4:]))
	var b strings.Builder
	fmt.Fprintf(&b, "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=%s; s=%s;\r\n\th=", algo, d.Domain, d.Selector)
	line := len("\th=")
	for i, n := range names {
		if i > 0 {
			b.WriteByte(':')
			line++
		}
		if line+len(n) > 76 {
			b.WriteString("\r\n\t") // FWS around the colons is allowed (RFC 6376 §3.5)
			line = 1
		}
		b.WriteString(n)
		line += len(n)
	}
	fmt.Fprintf(&b, ";\r\n\tbh=%s;\r\n\tb=", base64.StdEncoding.EncodeToString(bh[:]))
	s.field = b.String()
	s.canon = bytes.TrimSuffix(relaxedField([]byte(s.field+"\r\n")), []byte("\r\n"))
	return s, nil
}

// sign returns the DKIM-Signature field of the copy whose own header
// fields (CRLF lines, above the shared header) are own.
func (s *dkimSigner) sign(own []byte) ([]byte, error) {
	fields := headerFields(own)
	h := sha256.New()
	for _, p := range s.pieces {
		if p.own == "" {
			h.Write(p.fixed)
			continue
		}
		seen := 0
		for i := len(fields) - 1; i >= 0; i-- {
			if fieldName(fields[i]) == p.own {
				if seen == p.nth {
					h.Write(relaxedField(fields[i]))
					break
				}
				seen++
			}
		}
	}
	h.Write(s.canon)
	sig, err := s.signer.Sign(rand.Reader, h.Sum(nil), s.opts)
	if err != nil {
		return nil, fmt.Errorf("announce: dkim: %w", err)
	}
	enc := base64.StdEncoding.EncodeToString(sig)
	out := make([]byte, 0, len(s.field)+len(enc)+len(enc)/70*3+2)
	out = append(out, s.field...)
	for len(enc) > 0 {
		n := min(len(enc), 72)
		if len(out) > len(s.field) {
			out = append(out, "\r\n\t"...)
		}
		out = append(out, enc[:n]...)
		enc = enc[n:]
	}
	return append(out, '\r', '\n'), nil
}

// headerFields splits a header block (CRLF lines) into fields, each with
// its continuation lines and final CRLF.
func headerFields(h []byte) [][]byte {
	var out [][]byte
	for len(h) > 0 {
		i := 0
		for {
			j := bytes.Index(h[i:], []byte("\r\n"))
			if j < 0 {
				i = len(h)
				break
			}
			i += j + 2
			if i >= len(h) || (h[i] != ' ' && h[i] != '\t') {
				break
			}
		}
		out = append(out, h[:i])
		h = h[i:]
	}
	return out
}

func fieldName(f []byte) string {
	n, _, _ := bytes.Cut(f, []byte(":"))
	return strings.ToLower(string(bytes.TrimRight(n, " \t")))
}

// relaxedField is the relaxed header canonicalization (RFC 6376 §3.4.2):
// the name in lower case, the value unfolded, runs of white space made one
// space, none around the colon or at the end.
func relaxedField(f []byte) []byte {
	name, value, _ := bytes.Cut(f, []byte(":"))
	out := make([]byte, 0, len(f))
	out = append(out, strings.ToLower(string(bytes.TrimRight(name, " \t")))...)
	out = append(out, ':')
	space, started := false, false
	for _, c := range value {
		switch c {
		case ' ', '\t', '\r', '\n':
			space = true
		default:
			if space && started {
				out = append(out, ' ')
			}
			space, started = false, true
			out = append(out, c)
		}
	}
	return append(out, '\r', '\n')
}

// relaxedBody is the relaxed body canonicalization (RFC 6376 §3.4.4):
// runs of white space in a line made one space, none at line ends, no
// empty lines at the end, and a final CRLF unless the body is empty.
func relaxedBody(b []byte) []byte {
	out := make([]byte, 0, len(b))
	empties := 0
	for len(b) > 0 {
		line, rest, found := bytes.Cut(b, []byte("\r\n"))
		b = rest
		var l []byte
		space := false
		for _, c := range line {
			if c == ' ' || c == '\t' {
				space = true
				continue
			}
			if space {
				l = append(l, ' ')
			}
			space = false
			l = append(l, c)
		}
		if len(l) == 0 {
			if found || len(line) > 0 {
				empties++
			}
			continue
		}
		for ; empties > 0; empties-- {
			out = append(out, '\r', '\n')
		}
		out = append(append(out, l...), '\r', '\n')
	}
	return out
}
