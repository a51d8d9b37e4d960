package listd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/workflow"
)

// Copies are sealed at delivery (queue.Sealer), not when they are queued.
//
// The transaction that stores an inbound message queues, for each copy, the
// rendered body (shared by every copy of the message: the queue stores it
// once) and a seal spec: who signs, the one key it is encrypted to, the
// header relays see and the header protected inside. The delivery worker
// calls Seal with the spec and the stored body, outside any transaction,
// and sends what it returns. So a 10 MB report to six members is stored once,
// not as six ciphertexts, the write transaction does no cryptography, and
// each copy is encrypted and signed a few kilobytes at a time when it goes
// out. Every encrypted copy takes this one path, small or large.
//
// The spec fixes the Message-ID, so a copy sent again after a crash carries
// the same one (docs/threat-model.md A3), though its ciphertext is new. The
// key is checked again at delivery: a copy whose key was removed, expired
// or revoked meanwhile fails, and the committee is alerted; it is never sent
// in plaintext (docs/threat-model.md D6).

// sealSpec is the spec of a copy of om encrypted to key alone and signed by
// the key of the list signer: relays see outer, om's own header travels
// inside as protected headers (docs/threat-model.md D7).
func sealSpec(signer lists.Name, key *keys.Key, outer mail.Header, om *outMail) (*queue.Seal, error) {
	if key == nil {
		return nil, errors.New("listd: an encrypted copy needs the recipient's key")
	}
	o, err := headerBytes(outer)
	if err != nil {
		return nil, err
	}
	in, err := headerBytes(om.header())
	if err != nil {
		return nil, err
	}
	return &queue.Seal{Signer: string(signer), To: key.Fingerprint(), Outer: o, Inner: in}, nil
}

// signSpec is the spec of om signed by the key of the list signer and sent
// unencrypted (to a reporter without a key, to an outside channel). The
// distributors list never sends one (Seal refuses it).
func signSpec(signer lists.Name, om *outMail) (*queue.Seal, error) {
	h, err := headerBytes(om.header())
	if err != nil {
		return nil, err
	}
	return &queue.Seal{Signer: string(signer), SignOnly: true, Outer: h}, nil
}

// Seal makes a queued copy's message from its spec and body: the queue's
// Sealer. Every error but a failure to read the body is permanent: the row
// fails and the committee is alerted.
func (s *Service) Seal(r *queue.Row, body io.Reader) ([]byte, error) {
	s = s.current() // the keyring in force now: a key removed since intake is not used
	sp := r.Seal
	if sp == nil {
		return nil, queue.Permanent(errors.New("listd: row has no seal spec"))
	}
	signer, err := s.signerKey(sp.Signer)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	rd := &readErr{r: body}
	if len(sp.Compose) > 0 {
		return s.sealComposed(r, rd, signer) // composed.go
	}
	if sp.SignOnly {
		return s.signOnly(r, rd, signer)
	}
	to, err := s.sealKey(r)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	// The spec's headers go in as rendered when the copy was queued: keys
	// checks them and copies them field by field, with no parsing and
	// rendering again per copy.
	inner, err := keys.ProtectHeaderFields(rd, sp.Inner)
	if err != nil {
		return nil, rd.or(queue.Permanent(err))
	}
	var out bytes.Buffer
	out.Grow(sealedSize(r))
	if err := keys.EncryptStreamFields(&out, sp.Outer, inner, to, signer, s.keyOptions()); err != nil {
		return nil, rd.or(queue.Permanent(err))
	}
	return out.Bytes(), nil
}

// signOnly makes a copy signed and sent unencrypted.
func (s *Service) signOnly(r *queue.Row, rd *readErr, signer *keys.Key) ([]byte, error) {
	if lists.Name(r.Seal.Signer) == lists.Distributors {
		// docs/threat-model.md D6: the embargo list sends only ciphertext.
		return nil, queue.Permanent(errors.New("listd: the distributors list sends nothing unencrypted"))
	}
	outer, err := parseHeader(r.Seal.Outer)
	if err != nil {
		return nil, queue.Permanent(err)
	}
	// ReadFrom wants MinRead bytes free before it reads: with room for
	// BodySize only, it would copy the whole body once more at EOF.
	ent := bytes.NewBuffer(make([]byte, 0, r.BodySize+bytes.MinRead))
	if _, err := ent.ReadFrom(rd); err != nil {
		return nil, err
	}
	out, err := keys.Sign(outer, ent.Bytes(), signer, s.keyOptions())
	if err != nil {
		return nil, queue.Permanent(err)
	}
	return out, nil
}

// sealedSize estimates the sealed message: the outer header and MIME parts,
// then the inner entity and packet headers in base64 armor (4/3) with a
// CRLF every 64 characters: 11/8 of the binary.
func sealedSize(r *queue.Row) int {
	return len(r.Seal.Outer) + 1024 + (r.BodySize+len(r.Seal.Inner)+2048)*11/8
}

// signerKey is the key pair of the list that signs a copy.
func (s *Service) signerKey(list string) (*keys.Key, error) {
	var k *keys.Key
	switch lists.Name(list) {
	case lists.Security:
		k = s.o.ListKey
	case lists.Distributors:
		k = s.o.DistributorsKey
	case lists.Announce:
		k = s.o.AnnounceKey
	}
	if k == nil {
		return nil, fmt.Errorf("listd: no signing key for the list %q", list)
	}
	return k, nil
}

// sealKey is the key a copy is encrypted to, usable now: the member key
// pinned in the configuration under that fingerprint, or the key pinned to
// the incident for its reporter.
func (s *Service) sealKey(r *queue.Row) (*keys.Key, error) {
	sp := r.Seal
	var k *keys.Key
	if len(sp.Key) > 0 {
		ks, err := keys.ReadPublicKeys(bytes.NewReader(sp.Key))
		if err == nil && len(ks) > 0 && strings.EqualFold(ks[0].Fingerprint(), sp.To) {
			k = ks[0]
		}
	} else if sp.Reporter {
		var pub []byte
		var ok bool
		if err := s.o.DB.View(func(tx *bolt.Tx) error {
			pub, ok = incidentdb.ReporterKey(tx, workflow.ID(r.Incident))
			return nil
		}); err != nil {
			return nil, err
		}
		if ok {
			ks, err := keys.ReadPublicKeys(bytes.NewReader(pub))
			if err == nil && len(ks) > 0 && strings.EqualFold(ks[0].Fingerprint(), sp.To) {
				k = ks[0]
			}
		}
	} else if m, ok := s.o.Members.Lookup(sp.To); ok {
		k = m
	}
	if k == nil {
		return nil, fmt.Errorf("listd: key %s is no longer pinned", sp.To)
	}
	if err := k.Check(s.o.Now()); err != nil {
		return nil, fmt.Errorf("listd: key %s: %w", sp.To, err)
	}
	return k, nil
}

// parseHeader reads back a header block of a seal spec.
func parseHeader(b []byte) (mail.Header, error) {
	br := headerReaders.Get().(*bufio.Reader)
	br.Reset(io.MultiReader(bytes.NewReader(b), strings.NewReader("\r\n")))
	h, err := textproto.ReadHeader(br)
	br.Reset(nil)
	headerReaders.Put(br)
	if err != nil {
		return mail.Header{}, fmt.Errorf("listd: seal spec header: %w", err)
	}
	return mail.Header{Header: gomessage.Header{Header: h}}, nil
}

// headerReaders serve parseHeader, twice per sealed copy.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1024) }}

// readErr keeps the stored body's read error, which says itself whether
// retrying may cure it; an error of the sealing itself is permanent.
type readErr struct {
	r   io.Reader
	err error
}

func (e *readErr) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

func (e *readErr) or(err error) error {
	if e.err != nil {
		return e.err
	}
	return err
}
