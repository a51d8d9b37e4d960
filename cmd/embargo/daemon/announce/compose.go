package announce

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/pipeline"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
)

// reply is one mail this package writes to a (would-be) subscriber. Every
// header is set here through go-message, which refuses CR and LF in values
// (docs/threat-model.md B10); templates render the body only.
type reply struct {
	List      lists.List
	Project   string
	To        string
	ReplyTo   string // "" for none
	Subject   string
	MessageID string
	Date      time.Time
	Body      string // LF line ends
	// AutoSubmitted is the Auto-Submitted value (RFC 3834 §5): default
	// "auto-replied", for answers to a request; "auto-generated" for mail
	// no request caused (an operator's import).
	AutoSubmitted string
	// Unsubscribe, when set, is the List-Unsubscribe value (RFC 2369 §3.2);
	// OneClick adds List-Unsubscribe-Post (RFC 8058 §3.1), for a value whose
	// HTTPS URI names the recipient.
	Unsubscribe string
	OneClick    bool
}

func (r *reply) header() mail.Header {
	var h mail.Header
	// Set prepends: in reverse, so the usual fields come out first.
	h.Set("X-Loop", r.List.Address)
	if r.OneClick {
		h.Set("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	}
	if r.Unsubscribe != "" {
		h.Set("List-Unsubscribe", r.Unsubscribe)
	}
	h.Set("List-Id", r.List.ListID())
	// RFC 3834 §5: an automatic response to the request, unless said otherwise.
	auto := r.AutoSubmitted
	if auto == "" {
		auto = "auto-replied"
	}
	h.Set("Auto-Submitted", auto)
	h.SetMessageID(r.MessageID)
	if r.ReplyTo != "" {
		h.SetAddressList("Reply-To", []*mail.Address{{Address: r.ReplyTo}})
	}
	h.SetDate(r.Date)
	h.SetSubject(r.Subject)
	h.SetAddressList("To", []*mail.Address{{Address: r.To}})
	h.SetAddressList("From", []*mail.Address{{Name: displayName(r.Project, r.List), Address: r.List.Address}})
	return h
}

// render builds the message: PGP/MIME-signed by key, or plain without one.
func (r *reply) render(key *keys.Key, ko keys.Options) ([]byte, error) {
	ent, err := textEntity(r.Body)
	if err != nil {
		return nil, err
	}
	if key != nil {
		out, err := keys.Sign(r.header(), ent, key, ko)
		if err != nil {
			return nil, fmt.Errorf("announce: sign: %w", err)
		}
		return checked(out)
	}
	var b bytes.Buffer
	h := r.header()
	if err := textproto.WriteHeader(&b, h.Header.Header); err != nil {
		return nil, fmt.Errorf("announce: header: %w", err)
	}
	b.Truncate(b.Len() - 2) // the entity's fields follow
	b.WriteString("MIME-Version: 1.0\r\n")
	b.Write(ent)
	return checked(b.Bytes())
}

// textEntity is a text/plain part, quoted-printable (7-bit, so it can be
// signed as it is: RFC 3156 §3).
func textEntity(body string) ([]byte, error) {
	var h gomessage.Header
	h.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
	h.Set("Content-Transfer-Encoding", "quoted-printable")
	var b bytes.Buffer
	w, err := gomessage.CreateWriter(&b, h)
	if err != nil {
		return nil, fmt.Errorf("announce: compose: %w", err)
	}
	// Every line end LF, a lone CR included (RFC 2045 §6.7): Go's
	// quotedprintable.Writer drops the LF after a lone CR and a byte it
	// encodes (listd/compose.go says the same).
	body = strings.ReplaceAll(strings.ReplaceAll(body, "\r\n", "\n"), "\r", "\n")
	if _, err := io.WriteString(w, body); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func displayName(project string, l lists.List) string {
	if project == "" {
		project = l.Domain()
	}
	return project + " Security Announcements"
}

// newMessageID makes a random Message-ID that says nothing of the mail it
// names, as every Message-ID embargo makes (docs/threat-model.md D7).
func newMessageID(rnd io.Reader, domain string) (string, error) {
	var b [12]byte
	if _, err := io.ReadFull(rnd, b[:]); err != nil {
		return "", fmt.Errorf("announce: random: %w", err)
	}
	return hex.EncodeToString(b[:]) + "@" + domain, nil
}

var errBareLine = errors.New("announce: rendered message has a bare CR or LF")

// checked refuses a message that is not clean CRLF (docs/threat-model.md B2).
func checked(b []byte) ([]byte, error) {
	if !message.CleanLineEnds(b) {
		return nil, errBareLine
	}
	return b, nil
}

// Fields of the release header this package owns: removed from the
// message it is given, then set as the list requires (RFC 2369, RFC 2919,
// RFC 8058). Return-Path and the like belong to the receiving side.
var ownedFields = []string{
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Post", "List-Help",
	"List-Subscribe", "List-Owner", "List-Archive", "Precedence", "X-Loop",
	"Return-Path", "Delivered-To", "Bcc", "Cc",
	// Receipt requests would tell each reader's client to write back (docs/threat-model.md F3).
	"Disposition-Notification-To", "Return-Receipt-To", "X-Confirm-Reading-To",
}

// prepared is a release message ready for the fan-out: body holds every
// header field except List-Unsubscribe (and -Post), then the blank line and
// the signed body, byte for byte as given; each copy is a List-Unsubscribe
// prefix followed by body.
type prepared struct {
	body    []byte
	generic []byte // the shared copy: generic List-Unsubscribe fields + body
	// For the fan-out's own connections (Options.SMTP): body checked and
	// dot-stuffed once, the DKIM signer with its body hash (nil without
	// Options.DKIM), and the shared copy's own fields, signed.
	shared      *pipeline.Body
	dkim        *dkimSigner
	genericHead []byte
}

// prepareRelease checks that msg is a complete, canonical message signed
// by key (when key is set) and rewrites its list fields. The signature
// covers the first part of the multipart/signed body only (RFC 3156 §5), so
// the outer header can change, per release and per copy, without signing
// again.
func prepareRelease(msg []byte, l lists.List, key *keys.Key, o Options, now time.Time) ([]byte, error) {
	if _, err := checked(msg); err != nil {
		return nil, err
	}
	if err := lineLengths(msg); err != nil {
		return nil, err
	}
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, errors.New("message has no header/body separator")
	}
	if key != nil {
		if _, err := keys.Verify(msg, keys.NewKeyring(key), keys.Options{Now: func() time.Time { return now }}); err != nil {
			return nil, fmt.Errorf("not signed by the announce key: %w", err)
		}
	}
	h, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg[:end+4])))
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	for _, k := range []string{"From", "Message-Id", "Date", "Content-Type"} {
		if !h.Has(k) {
			return nil, fmt.Errorf("header has no %s field", k)
		}
	}
	for _, k := range ownedFields {
		h.Del(k)
	}
	// Add prepends: these come out first, in reverse order of the calls.
	h.Add("X-Loop", l.Address)
	h.Add("Precedence", "list")
	h.Add("List-Post", "NO") // RFC 2369 §3.4: posting is not allowed
	h.Add("List-Id", l.ListID())
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, h); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	b.Truncate(b.Len() - 2) // our blank line; the original one follows
	b.Write(msg[end+2:])
	return checked(b.Bytes())
}

// lineLengths refuses a line over 998 octets (RFC 5321 §4.5.3.1.6): a
// relay would cut it and break the signatures.
func lineLengths(msg []byte) error {
	for i := 0; len(msg) > 0; i++ {
		line, rest, _ := bytes.Cut(msg, []byte("\r\n"))
		if len(line) > 998 {
			return fmt.Errorf("line %d is %d octets long, over the 998 of RFC 5321 §4.5.3.1.6", i+1, len(line))
		}
		msg = rest
	}
	return nil
}

// genericUnsubscribe is the List-Unsubscribe field of the shared copy: the
// mailto URI (a request that gets a confirmation, like announce+unsubscribe@
// by hand) and, when configured, a generic page. No List-Unsubscribe-Post:
// RFC 8058 §3.1 requires the URI to identify the recipient.
func genericUnsubscribe(l lists.List, page string) ([]byte, error) {
	var h textproto.Header
	h.Add("List-Unsubscribe", genericUnsubscribeValue(l, page))
	return headerPrefix(h)
}

func genericUnsubscribeValue(l lists.List, page string) string {
	v := mailtoUnsubscribe(l)
	if page != "" {
		v += ", <" + page + ">"
	}
	return v
}

func mailtoUnsubscribe(l lists.List) string {
	return "<mailto:" + l.SubAddress(lists.DetailUnsubscribe) + "?subject=unsubscribe>"
}

// oneClickUnsubscribe is the per-copy field pair of RFC 8058: an HTTPS URI
// that names this subscriber, and List-Unsubscribe-Post.
func oneClickUnsubscribe(l lists.List, base, token string) ([]byte, error) {
	var h textproto.Header
	h.Add("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
	h.Add("List-Unsubscribe", oneClickValue(l, base, token))
	return headerPrefix(h)
}

// oneClickValue is List-Unsubscribe with the recipient's one-click URI
// first, then the mailto URI for clients without HTTP (RFC 8058 §3.1).
func oneClickValue(l lists.List, base, token string) string {
	return "<" + OneClickURL(base, token) + ">, " + mailtoUnsubscribe(l)
}

// OneClickURL is the RFC 8058 URI of a one-click token: daemon/web serves
// POST /unsubscribe/{token}.
func OneClickURL(base, token string) string { return base + "/unsubscribe/" + token }

func headerPrefix(h textproto.Header) ([]byte, error) {
	var b bytes.Buffer
	if err := textproto.WriteHeader(&b, h); err != nil {
		return nil, fmt.Errorf("announce: header: %w", err)
	}
	b.Truncate(b.Len() - 2)
	return b.Bytes(), nil
}
