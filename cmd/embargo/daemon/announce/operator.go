package announce

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// KindNotice is the queue kind of the one notice an address gets when an
// operator puts it on the list (Import, Add).
const KindNotice = "announce-notice"

// How an address left the list (remembered without the address, see
// bucketLeft).
const (
	LeftOneClick = "one-click unsubscribe"
	LeftMail     = "confirmed unsubscribe by mail"
	LeftOperator = "removed by an operator"
)

type leftRecord struct {
	V   int       `json:"v"`
	At  time.Time `json:"at"`
	How string    `json:"how"`
}

// leftKey is the stored form of an address key that left: a hash, so the
// store keeps no address of someone who asked to leave.
func leftKey(key string) []byte {
	h := sha256.Sum256([]byte("embargo announce left\x00" + key))
	return h[:]
}

func (b *buckets) markLeft(key, how string, now time.Time) error {
	v, err := json.Marshal(leftRecord{V: schemaVersion, At: now, How: how})
	if err != nil {
		return err
	}
	return b.left.Put(leftKey(key), v)
}

func (b *buckets) clearLeft(key string) error { return b.left.Delete(leftKey(key)) }

// Left says when and how addr left the list, if the store remembers it
// (ok false: it never left, or came back since): for an operator's
// `embargo subscribers remove` run again after its first answer was lost.
func Left(tx *bolt.Tx, addr string) (at time.Time, how string, ok bool, err error) {
	b, err := open(tx)
	if err != nil {
		return time.Time{}, "", false, err
	}
	_, key, valid := normAddress(addr)
	if !valid {
		return time.Time{}, "", false, nil
	}
	r, err := b.getLeft(key)
	if err != nil || r == nil {
		return time.Time{}, "", false, err
	}
	return r.At, r.How, true, nil
}

func (b *buckets) getLeft(key string) (*leftRecord, error) {
	if b.left == nil {
		return nil, nil
	}
	v := b.left.Get(leftKey(key))
	if v == nil {
		return nil, nil
	}
	var r leftRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("announce: decode left record: %w", err)
	}
	return &r, nil
}

// Entry is one address an operator puts on the list: a line of a members
// listing (ParseListing) or the argument of `embargo subscribers add`.
type Entry struct {
	Line    int    // its line in the file; 0 on the command line
	Address string // as written
	Name    string // display name; "" if none
}

// Skip is an entry that was not applied, and why, in a sentence.
type Skip struct {
	Entry
	Reason string
}

// Outcome is what Add did with an address.
type Outcome string

const (
	OutcomeSubscribed Outcome = "subscribed" // new on the list: one notice queued
	OutcomeAlready    Outcome = "already"    // active already: nothing sent
	OutcomeEnabled    Outcome = "enabled"    // disabled after bounces, active again: nothing sent
	OutcomeSkipped    Outcome = "skipped"    // see the reason
)

// ImportResult counts what Import did.
type ImportResult struct {
	Subscribed int    // new on the list, each with one notice
	Already    int    // active already: nothing sent
	Skipped    []Skip // not applied: left earlier, disabled, an address of ours
}

// Import puts the entries of a members listing on the list inside the
// caller's transaction and returns the notices to enqueue with it: one per
// address new to the list, none for an address already active. No
// confirmation is asked: the operator vouches that these addresses opted in
// to the list they come from, and each one is told where it now receives
// advisories and how to leave (RFC 8058 one-click when configured). It is
// idempotent: a second run of the same entries changes nothing and sends
// nothing. An address that left this list, or was disabled after bounces,
// is not brought back (Add does that, on purpose).
func Import(tx *bolt.Tx, entries []Entry, now time.Time, o Options) (ImportResult, []queue.Msg, error) {
	o = o.withDefaults()
	var res ImportResult
	b, err := open(tx)
	if err != nil {
		return res, nil, err
	}
	var out []queue.Msg
	for _, e := range entries {
		oc, why, m, err := b.operatorAdd(e, false, ViaImport, now, o)
		if err != nil {
			return res, nil, err
		}
		switch oc {
		case OutcomeSubscribed:
			res.Subscribed++
			out = append(out, m)
		case OutcomeAlready:
			res.Already++
		default:
			res.Skipped = append(res.Skipped, Skip{e, why})
		}
	}
	o.Logger.Info("announce import", "entries", len(entries), "subscribed", res.Subscribed, "already", res.Already, "skipped", len(res.Skipped))
	return res, out, nil
}

// Add puts one address on the list at an operator's request, like Import,
// and also brings back an address that left or was disabled: the operator
// says its owner asked. A disabled address becomes active without a notice
// (it had one); a new one gets the notice. why explains a skip.
func Add(tx *bolt.Tx, e Entry, now time.Time, o Options) (oc Outcome, why string, msgs []queue.Msg, err error) {
	o = o.withDefaults()
	b, err := open(tx)
	if err != nil {
		return "", "", nil, err
	}
	oc, why, m, err := b.operatorAdd(e, true, ViaOperator, now, o)
	if err != nil || oc != OutcomeSubscribed {
		return oc, why, nil, err
	}
	return oc, "", []queue.Msg{m}, nil
}

// operatorAdd applies one entry. force brings back addresses that left or
// were disabled.
func (b *buckets) operatorAdd(e Entry, force bool, via string, now time.Time, o Options) (Outcome, string, queue.Msg, error) {
	a, key, ok := normAddress(e.Address)
	if !ok {
		return OutcomeSkipped, fmt.Sprintf("%q is not a plain address like reader@example.org", e.Address), queue.Msg{}, nil
	}
	if o.IsOurs(a) || isListAddress(o.List, key) {
		return OutcomeSkipped, a + " is an address of this server: lists never subscribe themselves", queue.Msg{}, nil
	}
	name := CleanName(e.Name)
	r, err := b.getSub(key)
	if err != nil {
		return "", "", queue.Msg{}, err
	}
	if r != nil && r.State == StateActive {
		if r.Name == "" && name != "" {
			r.Name = name
			return OutcomeAlready, "", queue.Msg{}, b.putSub(key, r)
		}
		return OutcomeAlready, "", queue.Msg{}, nil
	}
	if r != nil && r.State == StateDisabled {
		if !force {
			return OutcomeSkipped, fmt.Sprintf("%s was disabled after %d bounced releases and stays so; `embargo subscribers add %s` enables it again", a, r.Bounces, a), queue.Msg{}, nil
		}
		if name != "" {
			r.Name = name
		}
		return OutcomeEnabled, "", queue.Msg{}, b.activate(key, a, r, now, o.Rand)
	}
	left, err := b.getLeft(key)
	if err != nil {
		return "", "", queue.Msg{}, err
	}
	if left != nil {
		if !force {
			return OutcomeSkipped, fmt.Sprintf("%s left the list on %s (%s) and is not added again; `embargo subscribers add %s` adds it back if its owner asked",
				a, left.At.UTC().Format(time.DateOnly), left.How, a), queue.Msg{}, nil
		}
		if err := b.clearLeft(key); err != nil {
			return "", "", queue.Msg{}, err
		}
	}
	// New, or pending a confirmation by mail: the operator's word replaces it.
	if r == nil {
		r = &subRecord{Created: now}
	}
	r.Via = via
	if name != "" {
		r.Name = name
	}
	if err := b.activate(key, a, r, now, o.Rand); err != nil {
		return "", "", queue.Msg{}, err
	}
	m, err := notice(a, r.OneClick, now, o)
	if err != nil {
		return "", "", queue.Msg{}, err
	}
	return OutcomeSubscribed, "", m, nil
}

// notice is the one message an address gets when an operator puts it on
// the list: signed by the list key, it says where advisories now come from
// and how to leave, and asks for nothing (no confirmation loop). With
// OneClick its header carries the address's own RFC 8058 URI, like every
// release copy it will get.
func notice(addr, token string, now time.Time, o Options) (queue.Msg, error) {
	l := o.List
	project := o.Project
	if project == "" {
		project = l.Domain()
	}
	oneClick := o.OneClick && token != ""
	unsub, url := mailtoUnsubscribe(l), ""
	if oneClick {
		url = OneClickURL(o.OneClickBase, token)
		unsub = oneClickValue(l, o.OneClickBase, token)
	}
	fpr := ""
	if o.Key != nil {
		fpr = groupFingerprint(o.Key.Fingerprint())
	}
	return compose(answer{
		Template: "announce-imported",
		Subject:  "You now receive the " + project + " security advisories from " + l.Address,
		To:       addr, Kind: KindNotice,
		// Nobody asked for this message: it is not a reply (RFC 3834 §5).
		AutoSubmitted: "auto-generated",
		Unsubscribe:   unsub, OneClick: oneClick,
		Data: map[string]any{"OneClickURL": url, "KeyFingerprint": fpr},
	}, now, o)
}

// groupFingerprint writes a fingerprint in groups of four, as gpg shows it.
func groupFingerprint(f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f[i:min(i+4, len(f))])
	}
	return b.String()
}

// maxName bounds a stored display name, in characters.
const maxName = 100

// CleanName makes a display name from a listing safe to store and print:
// valid UTF-8, one line, no control or format characters (bidi overrides
// would reorder what an operator reads), at most 100 characters. Names are
// never written into a header.
func CleanName(s string) string {
	s = strings.ToValidUTF8(s, "")
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == maxName {
			break
		}
		switch {
		case unicode.IsSpace(r):
			r = ' '
		case unicode.IsControl(r), unicode.Is(unicode.Cf, r), r == utf8.RuneError:
			continue
		}
		b.WriteRune(r)
		n++
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
