package announce

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
)

// Sub-address details handled here, besides lists.DetailSubscribe and
// lists.DetailUnsubscribe.
const (
	DetailConfirmPrefix = "confirm-" // announce+confirm-<token>@
	DetailBouncesPrefix = "bounces-" // announce+bounces-<release id>@
)

// Queue kinds of the mails HandleRequest returns.
const (
	KindConfirm = "announce-confirm" // "reply to confirm" mails
	KindResult  = "announce-result"  // "you are (un)subscribed" mails
)

// pruneLimit bounds the clean-up each request does on the way.
const pruneLimit = 64

// tokenRecord is the stored JSON of a confirmation token (its hash is the key).
type tokenRecord struct {
	V       int       `json:"v"`
	Action  string    `json:"action"`
	Key     string    `json:"key"`  // address key
	Address string    `json:"addr"` // as requested, for delivery
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// HandleRequest answers one mail to announce+subscribe@,
// announce+unsubscribe@ or announce+confirm-<token>@ (detail is the part
// after the "+"), inside the caller's transaction, and returns the mail to
// enqueue with it. It never returns an error for what the mail says, only
// for a store that fails: the sender always gets the same 250, and the
// replies are the same whether or not the address is subscribed
// (docs/threat-model.md F3).
//
//   - subscribe, unsubscribe: a confirmation mail to the requester (the From
//     address, else the envelope sender) with a fresh token, at most
//     Options.ConfirmationsPerDay per address in 24 hours (docs/threat-model.md F2).
//     The mail asks for a reply; it holds no link to follow. Its text does
//     not depend on whether the address is subscribed.
//   - confirm-<token>: the token's action for the address it was issued to
//     (never the sender of the confirming mail), once, within
//     Options.TokenLifetime (docs/threat-model.md F1), then a short result mail to
//     that address. A used, expired, unknown or malformed token does nothing.
//
// Automatic mail (RFC 3834 §2: Auto-Submitted, Precedence bulk/junk/list,
// List-* fields) and mail from the null sender get no answer and confirm
// nothing: an out-of-office reply to a confirmation must not subscribe
// anyone.
func HandleRequest(tx *bolt.Tx, l lists.List, detail string, envFrom string, msg *message.Message, now time.Time, o Options) ([]queue.Msg, error) {
	o = o.withDefaults()
	o.List = l
	b, err := open(tx)
	if err != nil {
		return nil, err
	}
	if _, err := b.prune(now, pruneLimit); err != nil {
		return nil, err
	}
	if envFrom == "" || msg == nil || msg.Auto {
		return nil, nil
	}
	detail = strings.ToLower(detail)
	switch {
	case detail == lists.DetailSubscribe:
		return request(b, actionSubscribe, requester(envFrom, msg), now, o)
	case detail == lists.DetailUnsubscribe:
		return request(b, actionUnsubscribe, requester(envFrom, msg), now, o)
	case strings.HasPrefix(detail, DetailConfirmPrefix):
		return confirm(b, strings.TrimPrefix(detail, DetailConfirmPrefix), now, o)
	}
	return nil, nil
}

// requester is who asked: the From address when it is a plain address,
// else the envelope sender. Both are forgeable; the confirmation is what
// proves the request.
func requester(envFrom string, msg *message.Message) string {
	if a, _, ok := normAddress(msg.From); ok {
		return a
	}
	return envFrom
}

func request(b *buckets, action, addr string, now time.Time, o Options) ([]queue.Msg, error) {
	l := o.List
	a, key, ok := normAddress(addr)
	if !ok || o.IsOurs(a) || isListAddress(l, key) {
		o.Logger.Info("announce request ignored", "action", action, "reason", "address")
		return nil, nil
	}
	if ok, err := b.takeRate(key, now, o.ConfirmationsPerDay); err != nil || !ok {
		if err == nil {
			o.Logger.Info("announce request ignored", "action", action, "reason", "rate")
		}
		return nil, err
	}
	tok, err := newToken(o.Rand)
	if err != nil {
		return nil, err
	}
	expires := now.Add(o.TokenLifetime)
	h := tokenHash(action, tok)
	v, err := json.Marshal(tokenRecord{V: schemaVersion, Action: action, Key: key, Address: a, Created: now, Expires: expires})
	if err != nil {
		return nil, err
	}
	if err := b.tokens.Put(h, v); err != nil {
		return nil, err
	}
	if err := b.expiry.Put(expiryKey(expires, expToken, h), nil); err != nil {
		return nil, err
	}
	if action == actionSubscribe {
		// Record the request as pending unless the address is known: the
		// mail below is the same either way.
		r, err := b.getSub(key)
		if err != nil {
			return nil, err
		}
		if r == nil || r.State == StatePending {
			if r == nil {
				r = &subRecord{Address: a, State: StatePending, Created: now}
			}
			r.PendingUntil = expires
			if err := b.putSub(key, r); err != nil {
				return nil, err
			}
			if err := b.expiry.Put(expiryKey(expires, expPending, []byte(key)), nil); err != nil {
				return nil, err
			}
		}
	}

	name, subject := "announce-confirm-subscribe", "Confirm your subscription to "+l.Address
	if action == actionUnsubscribe {
		name, subject = "announce-confirm-unsubscribe", "Confirm: unsubscribe from "+l.Address
	}
	confirmAddr := l.SubAddress(DetailConfirmPrefix + tok)
	m, err := compose(answer{Template: name, Subject: subject, To: a, ReplyTo: confirmAddr, Kind: KindConfirm, Data: map[string]any{
		"Expires":        formatInstant(expires),
		"ConfirmAddress": confirmAddr,
	}}, now, o)
	if err != nil {
		return nil, err
	}
	o.Logger.Info("announce confirmation queued", "action", action, "message_id", m.MessageID)
	return []queue.Msg{m}, nil
}

func confirm(b *buckets, tok string, now time.Time, o Options) ([]queue.Msg, error) {
	if !validToken(tok) {
		return nil, nil
	}
	var rec tokenRecord
	var h []byte
	// Both lookups always run: the time taken does not tell which action
	// a token had, or whether it exists.
	for _, action := range []string{actionSubscribe, actionUnsubscribe} {
		k := tokenHash(action, tok)
		if v := b.tokens.Get(k); v != nil && h == nil {
			if err := json.Unmarshal(v, &rec); err != nil {
				return nil, fmt.Errorf("announce: decode token: %w", err)
			}
			h = k
		}
	}
	if h == nil {
		o.Logger.Info("announce confirmation ignored", "reason", "unknown token")
		return nil, nil
	}
	// Single use: gone whatever happens next.
	if err := b.tokens.Delete(h); err != nil {
		return nil, err
	}
	if err := b.expiry.Delete(expiryKey(rec.Expires, expToken, h)); err != nil {
		return nil, err
	}
	if !now.Before(rec.Expires) || (rec.Action != actionSubscribe && rec.Action != actionUnsubscribe) {
		o.Logger.Info("announce confirmation ignored", "reason", "expired")
		return nil, nil
	}
	r, err := b.getSub(rec.Key)
	if err != nil {
		return nil, err
	}
	name, subject := "announce-subscribed", "Subscribed to "+o.List.Address
	if rec.Action == actionSubscribe {
		if r == nil {
			r = &subRecord{Created: now}
		}
		if r.State != StateActive {
			r.Via = ViaMail
		}
		if err := b.activate(rec.Key, rec.Address, r, now, o.Rand); err != nil {
			return nil, err
		}
		// Back by their own confirmed request: an import may count them again.
		if err := b.clearLeft(rec.Key); err != nil {
			return nil, err
		}
	} else {
		name, subject = "announce-unsubscribed", "Unsubscribed from "+o.List.Address
		if r != nil {
			if err := b.remove(rec.Key, r); err != nil {
				return nil, err
			}
		}
		if err := b.markLeft(rec.Key, LeftMail, now); err != nil {
			return nil, err
		}
	}
	m, err := compose(answer{Template: name, Subject: subject, To: rec.Address, Kind: KindResult}, now, o)
	if err != nil {
		return nil, err
	}
	o.Logger.Info("announce confirmation applied", "action", rec.Action, "message_id", m.MessageID)
	return []queue.Msg{m}, nil
}

// Unsubscribe removes the subscription named by an RFC 8058 one-click token
// (the daemon/web endpoint calls it on POST). A token that names no
// subscription gives ErrUnknownToken, which the endpoint answers exactly
// like success. A token does nothing else: it cannot confirm a request,
// and a confirmation token cannot be used here (each action has its own
// hash space).
func Unsubscribe(tx *bolt.Tx, token string, now time.Time) error {
	b, err := open(tx)
	if err != nil {
		return err
	}
	if !validToken(token) {
		return ErrUnknownToken
	}
	h := tokenHash(actionOneClick, token)
	key := b.oneclick.Get(h)
	if key == nil {
		return ErrUnknownToken
	}
	r, err := b.getSub(string(key))
	if err != nil {
		return err
	}
	if r == nil || r.OneClick != token {
		// A stale index entry: clean it, say nothing.
		if err := b.oneclick.Delete(h); err != nil {
			return err
		}
		return ErrUnknownToken
	}
	k := string(bytes.Clone(key))
	if err := b.remove(k, r); err != nil {
		return err
	}
	return b.markLeft(k, LeftOneClick, now)
}

// answer is one reply of the list to a (would-be) subscriber.
type answer struct {
	Template string         // the body's template
	Data     map[string]any // its data beyond the list's own fields, which compose adds
	Subject  string
	To       string // the subscriber's address
	ReplyTo  string // "" for none
	Kind     string // the queue kind: KindConfirm, KindResult or KindNotice
	// AutoSubmitted, Unsubscribe and OneClick go to the reply's header
	// (see reply).
	AutoSubmitted string
	Unsubscribe   string
	OneClick      bool
}

// compose renders one reply from the list.
func compose(a answer, now time.Time, o Options) (queue.Msg, error) {
	l := o.List
	project := o.Project
	if project == "" {
		project = l.Domain()
	}
	data := map[string]any{}
	for k, v := range a.Data {
		data[k] = v
	}
	data["Project"] = project
	data["ListAddress"] = l.Address
	data["Address"] = a.To
	data["SubscribeAddress"] = l.SubAddress(lists.DetailSubscribe)
	data["UnsubscribeAddress"] = l.SubAddress(lists.DetailUnsubscribe)
	body, err := o.Render(a.Template, data)
	if err != nil {
		return queue.Msg{}, err
	}
	mid, err := newMessageID(o.Rand, l.Domain())
	if err != nil {
		return queue.Msg{}, err
	}
	r := reply{List: l, Project: o.Project, To: a.To, ReplyTo: a.ReplyTo, Subject: a.Subject, MessageID: mid, Date: now, Body: body,
		AutoSubmitted: a.AutoSubmitted, Unsubscribe: a.Unsubscribe, OneClick: a.OneClick}
	out, err := r.render(o.Key, o.keyOptions(now))
	if err != nil {
		return queue.Msg{}, err
	}
	// From the null sender: an automatic reply must not draw one (RFC 3834
	// §4), and nothing bounces back to the list.
	return queue.Msg{From: "", To: []string{a.To}, Data: out, MessageID: mid, Kind: a.Kind, NoAlert: true}, nil
}

// isListAddress reports whether key is the list address or a sub-address of it.
func isListAddress(l lists.List, key string) bool {
	local, domain, _ := strings.Cut(key, "@")
	base, _, _ := strings.Cut(local, "+")
	return strings.EqualFold(domain, l.Domain()) && strings.EqualFold(base, l.Local())
}

// takeRate counts one confirmation for key if fewer than limit were sent in
// the last 24 hours, and reports whether it may be sent.
func (b *buckets) takeRate(key string, now time.Time, limit int) (bool, error) {
	old := b.rate.Get([]byte(key))
	times := recentTimes(old, now)
	if len(times) >= limit {
		return false, nil
	}
	if len(old) >= 8 {
		last := time.Unix(0, int64(binary.BigEndian.Uint64(old[len(old)-8:])))
		if err := b.expiry.Delete(expiryKey(last.Add(rateWindow), expRate, []byte(key))); err != nil {
			return false, err
		}
	}
	times = append(times, now)
	v := make([]byte, 0, 8*len(times))
	for _, t := range times {
		v = binary.BigEndian.AppendUint64(v, uint64(unixNano(t)))
	}
	if err := b.rate.Put([]byte(key), v); err != nil {
		return false, err
	}
	return true, b.expiry.Put(expiryKey(now.Add(rateWindow), expRate, []byte(key)), nil)
}

const rateWindow = 24 * time.Hour

// recentTimes decodes the stored send times and keeps those of the last 24 h.
func recentTimes(v []byte, now time.Time) []time.Time {
	var out []time.Time
	for len(v) >= 8 {
		t := time.Unix(0, int64(binary.BigEndian.Uint64(v[:8])))
		v = v[8:]
		if now.Sub(t) < rateWindow {
			out = append(out, t)
		}
	}
	return out
}

// formatInstant writes an instant as templates' utc helper does.
func formatInstant(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC (Monday)") }
