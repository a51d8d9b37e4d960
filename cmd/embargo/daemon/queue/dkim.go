package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"net/textproto"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMHeaders are the header fields a DKIMRelay signs, in the order of RFC
// 6376 §5.4.1's recommendation plus the list fields embargo writes (RFC 2369,
// RFC 2919, RFC 3834). A name listed more often than the message carries the
// field is "oversigned": the extra entries sign an empty instance, so a
// verifier rejects the message if a field of that name is added later (RFC
// 6376 §5.4.2, §8.15). From is listed twice for that reason: a second From
// above ours would otherwise be what many readers display.
var DKIMHeaders = []string{
	"From", "From",
	"Reply-To", "Reply-To",
	"Subject", "Subject",
	"Date", "Date",
	"To", "To",
	"Cc", "Cc",
	"Message-ID", "Message-ID",
	"In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Auto-Submitted", "Precedence",
	"List-Id", "List-Post", "List-Unsubscribe", "List-Unsubscribe-Post",
}

// DKIMOptions configures a DKIMRelay.
type DKIMOptions struct {
	// Domain is the signing domain (d=): the list domain, whose DNS publishes
	// the public key at Selector._domainkey.Domain.
	Domain string
	// Selector is s=, e.g. "embargo".
	Selector string
	// Signer holds the private key: RSA (at least 2048 bits) or Ed25519.
	Signer crypto.Signer
	// Headers overrides DKIMHeaders; it must name From.
	Headers []string
}

// DKIMRelay signs each message with DKIM (RFC 6376) just before handing it to
// the next Relay. Signing at delivery time, not at enqueue, keeps the stored
// row free of key material and lets a key rotation apply to mail already
// queued; a retried row is signed afresh.
//
// The canonicalisation is relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4), which
// survives the header refolding and trailing-space changes relays make. A
// message that cannot be signed (no header, a malformed field) is refused
// permanently, like any other renderer bug (see checkData).
type DKIMRelay struct {
	next Relay
	opts DKIMOptions
}

var _ BatchRelay = (*DKIMRelay)(nil)

// NewDKIMRelay wraps next. It checks the options by signing a test message,
// so a bad key fails at start-up rather than at the first delivery.
func NewDKIMRelay(next Relay, opts DKIMOptions) (*DKIMRelay, error) {
	if next == nil {
		return nil, errors.New("queue: dkim: no relay to wrap")
	}
	if opts.Headers == nil {
		opts.Headers = DKIMHeaders
	}
	r := &DKIMRelay{next: next, opts: opts}
	if _, err := r.Sign([]byte("From: a@b.test\r\n\r\ntest\r\n")); err != nil {
		return nil, err
	}
	return r, nil
}

// Sign returns data with a DKIM-Signature field prepended.
func (r *DKIMRelay) Sign(data []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(data) + 1024)
	err := dkim.Sign(&out, bytes.NewReader(data), &dkim.SignOptions{
		Domain:                 r.opts.Domain,
		Selector:               r.opts.Selector,
		Signer:                 r.opts.Signer,
		Hash:                   crypto.SHA256, // RFC 8301: rsa-sha1 must not be used
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             r.opts.Headers,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: dkim: %w", err)
	}
	return out.Bytes(), nil
}

// Send signs data and hands it to the next relay.
func (r *DKIMRelay) Send(ctx context.Context, from string, to []string, data []byte) error {
	signed, err := r.prepare(data)
	if err != nil {
		return err
	}
	return r.next.Send(ctx, from, to, signed)
}

// MaxBatch is the next relay's: a DKIMRelay batches when what it wraps does.
func (r *DKIMRelay) MaxBatch() int { return batchSize(r.next) }

// SendBatch signs each message and hands the batch to the next relay.
func (r *DKIMRelay) SendBatch(ctx context.Context, msgs []Outgoing) []error {
	errs := make([]error, len(msgs))
	signed := make([]Outgoing, 0, len(msgs))
	var idx []int
	for i, m := range msgs {
		data, err := r.prepare(m.Data)
		if err != nil {
			errs[i] = err
			continue
		}
		signed = append(signed, Outgoing{From: m.From, To: m.To, Data: data})
		idx = append(idx, i)
	}
	if len(signed) == 0 {
		return errs
	}
	var sent []error
	if br, ok := r.next.(BatchRelay); ok && br.MaxBatch() > 1 {
		sent = br.SendBatch(ctx, signed)
	} else {
		sent = make([]error, len(signed))
		for i, m := range signed {
			sent[i] = r.next.Send(ctx, m.From, m.To, m.Data)
		}
	}
	for k, i := range idx {
		errs[i] = sent[k]
	}
	return errs
}

// prepare checks a message and signs it.
func (r *DKIMRelay) prepare(data []byte) ([]byte, error) {
	// Refuse what the next relay would refuse before spending a signature on it.
	if err := checkData(data); err != nil {
		return nil, err
	}
	// RFC 6376 §5.4: From must be signed, and RFC 5322 §3.6 wants exactly one.
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(data))).ReadMIMEHeader()
	if err != nil {
		return nil, Permanent(fmt.Errorf("queue: dkim: header: %w", err))
	}
	if n := len(h.Values("From")); n != 1 {
		return nil, Permanent(fmt.Errorf("queue: dkim: message has %d From fields, want 1 (renderer bug)", n))
	}
	signed, err := r.Sign(data)
	if err != nil {
		return nil, Permanent(err)
	}
	return signed, nil
}
