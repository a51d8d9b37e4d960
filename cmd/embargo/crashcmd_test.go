package main

import (
	"bytes"
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/workflow"
)

// crashCanary marks embargoed text: the reports' bodies and the commands'
// /set summary carry it with a number after it (docs/threat-model.md G1).
const crashCanary = "CnryQz"

// crashTargets is how many reports the committee works with commands.
const crashTargets = 3

// TestCrashLoopCommands is the kill -9 loop of docs/threat-model.md §2.4 with
// the committee at work: four clients send reports (their bodies carry a
// canary), and alice, an SRC member with a pinned key, sends signed commands
// into the threads of three incidents opened first, one message after the
// other, each sent again with the same bytes until it is answered 250, as an
// MTA would. The first message of the first incident schedules a release at
// T (/disclose, days ahead). After each kill the store the killed run left
// is read with incidentdb's and queue's readers (I3: no partial records):
// every incident has its archived report; every queue row its data and
// body; each command message's history entries are all there or none, at
// most once, and where they are its receipt is queued or reached the relay.
// After the drain: every command message answered 250 is applied, once,
// with its receipt delivered (I3); no Message-ID, In-Reply-To or References
// field the relay got names an incident ID (I5, D7); no canary appears in a
// message that is not encrypted, headers or decoded text (I5, G1); no
// advisory reached the relay and the incident still waits for T (I6); the
// store passes its checks (I2) and I1 and I4 hold as in TestCrashLoop.
// EMBARGO_CRASH_COMMAND_ITERATIONS sets the number of kills (default 8).
func TestCrashLoopCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("crash loop skipped in -short mode")
	}
	kills := crashIterations("EMBARGO_CRASH_COMMAND_ITERATIONS", 8)
	alice := daemontest.NewGPG(t)
	afpr := alice.GenKey("Alice <alice@ex.test>")
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": alice.Export(afpr)})
	secret, err := keys.ReadListKey(bytes.NewReader(alice.Must(nil, "--armor", "--export-secret-keys", afpr)), nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := queuetest.NewRecorder(t)
	rec.Expect(queuetest.Policy{Domain: "ex.test", Committee: []string{"alice@ex.test"}, Encrypted: []string{"distributors+bounces-"}})
	// An outside channel gets the release at T as the announce list does:
	// the relay sees it if it goes early (I6).
	d := newCrashDaemon(t, rec, fmt.Sprintf("keys_dir = %q\n", kd), daemontest.TOMLMember("alice@ex.test", afpr)+"[[channels]]\naddress = \"oss@chan.test\"\nsubject_tag = \"[ex]\"\n")
	load := &crashLoad{sent: map[string]string{}, accepted: map[string]string{}, canary: crashCanary + "r"}
	T := workflow.NextSlot(time.Now().UTC().Add(10*24*time.Hour), nil)
	cs := &commandSender{g: alice, fpr: afpr, T: T, accepted: map[string]bool{}}
	relay := &relayReader{rec: rec, key: secret}
	var atKills []string // receipts queued / command messages applied, at each kill

	d.killLoop(t, kills, func(stop chan struct{}, wg *sync.WaitGroup) {
		if cs.targets == nil {
			cs.openTargets(t, d.addr, load)
		}
		for range 4 {
			wg.Go(func() { sendReports(d.addr, load, stop) })
		}
		wg.Go(func() { cs.run(d.addr, stop) })
	}, func(run int) {
		db := d.store(t, run+1)
		defer db.Close()
		db.View(func(tx *bolt.Tx) error {
			a, q := checkPartial(t, fmt.Sprintf("after kill %d", run+1), tx, cs, relay, false)
			atKills = append(atKills, fmt.Sprintf("%d/%d", q, a))
			return nil
		})
	})
	d.drain(t, func() { cs.finish(t, d.addr) })

	db := d.store(t, kills)
	var stored map[string]string
	queued, applied := 0, 0
	db.View(func(tx *bolt.Tx) error {
		stored, queued = crashOutcome(tx, load)
		applied, _ = checkPartial(t, "after the drain", tx, cs, relay, true)
		checkUnreleased(t, tx, cs, rec.Messages())
		return nil
	})
	db.Close()
	msgs := rec.Messages()
	for mid := range load.accepted {
		if _, ok := stored[mid]; !ok {
			t.Errorf("I1: report <%s> got 250 but is not in the store", mid)
		}
	}
	checkThreading(t, msgs)
	checkCanaries(t, msgs)
	dups, maxPerKill, maxCopies, perKill := checkResends(t, msgs, d.lives)
	t.Logf("%d kills: %d reports sent, %d accepted (250), %d stored; %d command messages (%d command lines) sent, %d sending attempts, %d accepted; %d relay messages, %d copies sent again (at most %d after one kill, at most %d copies of one message), %d rows still queued",
		kills, len(load.sent), len(load.accepted), len(stored), len(cs.sent), cs.lines(), cs.attempts, len(cs.accepted), len(msgs), dups, maxPerKill, maxCopies, queued)
	t.Logf("messages sent again because of each kill: %v", perKill[:kills])
	t.Logf("%d command messages applied; receipts still queued / command messages applied at each kill: %v", applied, atKills)
	if queued != 0 {
		t.Errorf("%d rows still queued after the drain", queued)
	}
	if len(load.accepted) == 0 || len(cs.accepted) < 2*crashTargets {
		t.Fatalf("%d reports and %d command messages accepted: the loop proves little", len(load.accepted), len(cs.accepted))
	}
}

// crashCommand is one signed command message of the loop.
type crashCommand struct {
	msgid, incident, token string
	lines                  int // command lines, each one history entry when applied
	raw                    []byte
}

// commandSender is alice's mail client: it sends signed command messages
// one after the other into the targets' threads, and sends the one not yet
// answered 250 again, byte for byte, until it is.
type commandSender struct {
	g        *daemontest.GPG
	fpr      string
	T        time.Time // the release /disclose schedules (I6)
	targets  []workflow.ID
	mu       sync.Mutex
	sent     []crashCommand // every message, in order; the last may be pending
	pending  bool
	accepted map[string]bool // Message-IDs answered 250
	attempts int
}

// openTargets sends the reports the commands work on, before any other
// mail, so that they are the first incidents.
func (c *commandSender) openTargets(t *testing.T, addr string, l *crashLoad) {
	t.Helper()
	for i := range crashTargets {
		from := fmt.Sprintf("target%d@out.test", i)
		msg := fmt.Sprintf("From: %s\r\nSubject: target %d\r\nMessage-ID: <target%d@out.test>\r\n\r\nsteps %s%d\r\n", from, i, i, crashCanary+"t", i)
		if err := daemontest.SendSMTP(addr, from, []string{"security@ex.test"}, []byte(msg)); err != nil {
			t.Fatalf("target report %d: %v", i, err)
		}
		l.mu.Lock()
		l.sent[fmt.Sprintf("target%d@out.test", i)], l.accepted[fmt.Sprintf("target%d@out.test", i)] = from, from
		l.mu.Unlock()
		c.targets = append(c.targets, workflow.ID(fmt.Sprintf("SEC-%d-%04d", time.Now().UTC().Year(), i+1)))
	}
}

// next signs the next command message. The first into each thread accepts
// the report and takes the lead; the first thread's also writes and
// approves the advisory and schedules its release at T, and gets no more
// (an approved advisory is locked). Later messages set the second and third
// incidents' summaries and add CVEs. Each carries a new token.
func (c *commandSender) next() crashCommand {
	n := len(c.sent)
	id := c.targets[1+n%(len(c.targets)-1)]
	token := fmt.Sprintf("%sc%dx", crashCanary, n)
	text := fmt.Sprintf("/set summary overflow %s\n/cve CVE-2026-%d\n", token, 10000+n)
	if n < len(c.targets) {
		id = c.targets[n]
		text = fmt.Sprintf("/accept\n/lead me\n/set summary overflow %s\n", token)
		if n == 0 {
			text += "/set actor a remote attacker\n/set impact code execution\n/set affected >= 1.0.0, < 1.2.4\n/set fixed 1.2.4\n/severity high\n/approve\n/disclose " + c.T.Format("2006-01-02") + "\n"
		}
	}
	signed := c.g.Must([]byte(text), "--clearsign", "-u", c.fpr)
	msgid := fmt.Sprintf("cmd%d@ex.test", n)
	body := strings.ReplaceAll(strings.ReplaceAll(string(signed), "\r\n", "\n"), "\n", "\r\n")
	raw := fmt.Sprintf("From: alice@ex.test\r\nTo: security+%s@ex.test\r\nSubject: Re: [%s]\r\nMessage-ID: <%s>\r\n\r\n%s", id, id, msgid, body)
	return crashCommand{msgid: msgid, incident: string(id), token: token, lines: strings.Count(text, "\n"), raw: []byte(raw)}
}

// send sends the pending message (a new one if none is) once.
func (c *commandSender) send(addr string) error {
	c.mu.Lock()
	if !c.pending {
		c.sent = append(c.sent, c.next())
		c.pending = true
	}
	m := c.sent[len(c.sent)-1]
	c.attempts++
	c.mu.Unlock()
	err := daemontest.SendSMTP(addr, "alice@ex.test", []string{"security+" + m.incident + "@ex.test"}, m.raw)
	if err == nil {
		c.mu.Lock()
		c.accepted[m.msgid], c.pending = true, false
		c.mu.Unlock()
	}
	return err
}

// run sends until stop, a message every 50 ms or so.
func (c *commandSender) run(addr string, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		c.send(addr)
	}
}

// finish sends the message a kill left unanswered until it is answered.
func (c *commandSender) finish(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); c.pending; {
		if err := c.send(addr); err != nil && time.Now().After(deadline) {
			t.Fatalf("the last command message is still refused: %v", err)
		}
	}
}

func (c *commandSender) lines() int {
	n := 0
	for _, m := range c.sent {
		n += m.lines
	}
	return n
}

// relayReader reads what the recording relay got, decrypting alice's
// copies with her secret key once each.
type relayReader struct {
	rec   *queuetest.Recorder
	key   *keys.Key
	plain []string // the text of each message read so far: decrypted if encrypted to alice
}

// texts returns the text of every message the relay got so far.
func (r *relayReader) texts() []string {
	msgs := r.rec.Messages()
	for _, m := range msgs[len(r.plain):] {
		text := string(m.Data)
		if keys.IsEncrypted(m.Data) {
			if dec, err := keys.Decrypt(m.Data, r.key, nil, keys.Options{}); err == nil {
				text = daemontest.MIMEText(dec.Inner) + string(dec.Inner)
			}
		}
		r.plain = append(r.plain, text)
	}
	return r.plain
}

// receiptIn reports whether a receipt naming token is among texts.
func receiptIn(texts []string, token string) bool {
	for _, s := range texts {
		if strings.Contains(s, "receipt: ") && strings.Contains(s, token) {
			return true
		}
	}
	return false
}

// checkPartial checks I3 over a store: every incident has its archived
// message, every queue row its data and body, every command message's
// history entries are all there (once) or none, and an applied message's
// receipt is queued or reached the relay; final (after the drain): every
// command message answered 250 is applied, and its receipt reached the
// relay.
// It returns the command messages applied, and how many of their receipts
// were still queued.
func checkPartial(t *testing.T, when string, tx *bolt.Tx, cs *commandSender, relay *relayReader, final bool) (applied, receiptsQueued int) {
	t.Helper()
	incs, err := incidentdb.List(tx)
	if err != nil {
		t.Fatalf("I3 %s: %v", when, err)
	}
	byMsg := map[string]int{} // command Message-ID → history entries
	for _, inc := range incs {
		recs, err := incidentdb.Messages(tx, inc.ID)
		if err != nil || len(recs) == 0 {
			t.Errorf("I3 %s: incident %s has no archived message (%v)", when, inc.ID, err)
		}
		for _, r := range recs {
			if _, err := incidentdb.Raw(tx, r.Seq); err != nil {
				t.Errorf("I3 %s: incident %s's message %d has no raw bytes: %v", when, inc.ID, r.Seq, err)
			}
		}
		for _, h := range inc.History {
			byMsg[h.MessageID]++
		}
	}
	rows, err := queue.List(tx)
	if err != nil {
		t.Fatalf("I3 %s: %v", when, err)
	}
	var queued []string
	for _, r := range rows {
		full, err := queue.Get(tx, r.ID)
		// Size is len(Data) + BodySize (queue.Row): a row whose data or
		// shared body is missing falls short of it.
		if err != nil || r.Size == 0 || len(full.Data)+len(full.Body) != r.Size || len(full.Body) != r.BodySize {
			t.Errorf("I3 %s: queue row %d (%s) lacks its data or body: %d+%d bytes, want %d of which %d body (%v)", when, r.ID, r.Kind, len(full.Data), len(full.Body), r.Size, r.BodySize, err)
		}
		if r.Kind == "receipt" {
			// A sealed row's Subject is in its Seal; its kind says it.
			queued = append(queued, "receipt: "+string(full.Data)+string(full.Body))
		}
	}
	cs.mu.Lock()
	sent, accepted := append([]crashCommand(nil), cs.sent...), cs.accepted
	cs.mu.Unlock()
	for _, m := range sent {
		n := byMsg[m.msgid]
		if n != 0 {
			applied++
			if receiptIn(queued, m.token) {
				receiptsQueued++
			}
		}
		switch {
		case n == 0 && accepted[m.msgid] && final:
			t.Errorf("I3 %s: command message <%s> got 250 but is not applied", when, m.msgid)
		case n != 0 && n != m.lines:
			t.Errorf("I3 %s: command message <%s> has %d history entries, want its %d command lines once", when, m.msgid, n, m.lines)
		case n != 0 && !receiptIn(queued, m.token) && !receiptIn(relay.texts(), m.token):
			t.Errorf("I3 %s: command message <%s> is applied, but its receipt is neither queued nor delivered", when, m.msgid)
		case n != 0 && final && !receiptIn(relay.texts(), m.token):
			t.Errorf("I3 %s: command message <%s>'s receipt never reached the relay", when, m.msgid)
		}
	}
	return applied, receiptsQueued
}

// incidentIDs matches an incident ID in any case.
var incidentIDs = regexp.MustCompile(`(?i)sec-\d{4}-\d{4,}`)

// checkThreading is the D7 scan (I5): no threading field of a message the
// relay got names an incident ID.
func checkThreading(t *testing.T, msgs []queuetest.Message) {
	t.Helper()
	for i, m := range msgs {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Errorf("I5: relay message %d does not parse: %v", i, err)
			continue
		}
		for _, f := range []string{"Message-ID", "In-Reply-To", "References"} {
			if v := msg.Header.Get(f); incidentIDs.MatchString(v) {
				t.Errorf("I5 (D7): relay message %d to %v: %s %q names an incident", i, m.To, f, v)
			}
		}
	}
}

// checkCanaries is the G1 scan (I5): no canary in any message the relay got
// that is not encrypted, in its bytes or its decoded text.
func checkCanaries(t *testing.T, msgs []queuetest.Message) {
	t.Helper()
	enc := 0
	for i, m := range msgs {
		if keys.IsEncrypted(m.Data) {
			enc++
			continue
		}
		if s := string(m.Data) + daemontest.MIMEText(m.Data); strings.Contains(s, crashCanary) {
			t.Errorf("I5 (G1): relay message %d to %v is not encrypted and carries embargoed text:\n%.600s", i, m.To, m.Data)
		}
	}
	t.Logf("G1 scan: %d messages, %d encrypted", len(msgs), enc)
}

// checkUnreleased is I6: the release scheduled at T, days after the loop,
// with the advisory approved, has not happened: the incident still has T
// ahead and no disclosure, and no advisory reached the relay.
func checkUnreleased(t *testing.T, tx *bolt.Tx, cs *commandSender, msgs []queuetest.Message) {
	t.Helper()
	inc, err := incidentdb.Get(tx, cs.targets[0])
	if err != nil {
		t.Fatal(err)
	}
	if !inc.Approved {
		t.Errorf("I6: %s's advisory is not approved: no release is scheduled, the check proves nothing", inc.ID)
	}
	if !inc.T.Equal(cs.T) || !inc.DisclosedAt.IsZero() || inc.Phase == workflow.PhaseDisclosed {
		t.Errorf("I6: %s has T %v, disclosed %v, phase %s; want T %v, not disclosed", inc.ID, inc.T, inc.DisclosedAt, inc.Phase, cs.T)
	}
	for i, m := range msgs {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			continue
		}
		if to := strings.Join(m.To, ","); strings.Contains(msg.Header.Get("Subject"), "Advisory") || strings.Contains(to, "announce") || strings.Contains(to, "chan.test") {
			t.Errorf("I6: relay message %d to %v (%q) before T %v", i, m.To, msg.Header.Get("Subject"), cs.T)
		}
	}
}
