package daemon_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

var idRE = regexp.MustCompile(`SEC-\d{4}-\d{4}`)

// TestReportEndToEnd is the first user journey: a report in, the reporter
// acknowledged at once, every SRC member with a copy, threaded replies.
func TestReportEndToEnd(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	const canary = "CANARY-7f3a-report-body"
	raw := "From: Rep Orter <rep@out.test>\nTo: security@ex.test\nSubject: heap overflow " + canary + "\nMessage-ID: <r1@out.test>\n\nSteps: " + canary + "\n"
	h.MustSend("rep@out.test", []string{"security@ex.test"}, raw)
	msgs := h.Settle(3) // ack + alice + bob

	acks := daemontest.To(msgs, "rep@out.test")
	if len(acks) != 1 {
		t.Fatalf("reporter got %d messages, want 1 acknowledgement", len(acks))
	}
	ack := acks[0]
	ah := daemontest.Header(t, ack)
	id := idRE.FindString(ah.Get("Subject"))
	if id != fmt.Sprintf("SEC-%d-0001", time.Now().UTC().Year()) {
		t.Errorf("ack subject %q, want the new incident ID", ah.Get("Subject"))
	}
	// RFC 3834: auto-replied, from the null sender, threaded to the report,
	// nothing quoted from it.
	if ah.Get("Auto-Submitted") != "auto-replied" || ack.From != "" {
		t.Errorf("ack Auto-Submitted=%q envelope from=%q, want auto-replied and <>", ah.Get("Auto-Submitted"), ack.From)
	}
	if irt := ah.Get("In-Reply-To"); irt != "<r1@out.test>" {
		t.Errorf("ack In-Reply-To = %q", irt)
	}
	if strings.Contains(string(ack.Data), canary) || strings.Contains(string(ack.Data), "heap overflow") {
		t.Error("the acknowledgement quotes the report")
	}
	ab := daemontest.Body(t, ack)
	for _, want := range []string{id, "3 working days", "security@ex.test"} {
		if !strings.Contains(ab, want) {
			t.Errorf("ack body lacks %q:\n%s", want, ab)
		}
	}

	for _, member := range []string{"alice@ex.test", "bob@ex.test"} {
		got := daemontest.To(msgs, member)
		if len(got) != 1 {
			t.Fatalf("%s got %d messages, want 1", member, len(got))
		}
		mh := daemontest.Header(t, got[0])
		if s := mh.Get("Subject"); !strings.HasPrefix(s, "["+id+"] heap overflow") {
			t.Errorf("%s copy subject %q", member, s)
		}
		if rt := mh.Get("Reply-To"); !strings.Contains(rt, "security+"+id+"@ex.test") {
			t.Errorf("%s copy Reply-To %q", member, rt)
		}
		if mh.Get("Message-Id") == "" || mh.Get("References") == "" || mh.Get("List-Id") == "" {
			t.Errorf("%s copy lacks Message-ID/References/List-Id", member)
		}
		if !strings.Contains(daemontest.Body(t, got[0]), "Steps: "+canary) {
			t.Errorf("%s copy lacks the report text", member)
		}
		if !verpSender.MatchString(got[0].From) || !strings.HasPrefix(got[0].From, "security+") {
			t.Errorf("copy envelope sender %q, want the copy's own bounce address (docs/design.md §4)", got[0].From)
		}
	}
	if len(daemontest.To(msgs, "dist@vendor.test")) != 0 {
		t.Error("a distributor got the report")
	}
	// Logs carry IDs, never bodies or subjects.
	if strings.Contains(h.Logs.String(), canary) {
		t.Error("the canary reached the logs")
	}

	// Alice answers by replying to her copy (In-Reply-To its Message-ID): Bob
	// gets it, the reporter does not, Alice does not get her own mail back.
	aliceCopy := daemontest.Header(t, daemontest.To(msgs, "alice@ex.test")[0])
	mid := strings.Trim(aliceCopy.Get("Message-Id"), "<>")
	h.MustSend("alice@ex.test", []string{"security@ex.test"},
		"From: Alice <alice@ex.test>\nTo: security@ex.test\nSubject: Re: heap overflow\nIn-Reply-To: <"+mid+">\nMessage-ID: <a1@ex.test>\n\nConfirmed on main.\n")
	msgs = h.Settle(4)
	reply := msgs[3]
	if len(reply.To) != 1 || reply.To[0] != "bob@ex.test" {
		t.Fatalf("Alice's reply went to %v, want only bob", reply.To)
	}
	rh := daemontest.Header(t, reply)
	if !strings.Contains(daemontest.Body(t, reply), "Confirmed on main.") || !strings.Contains(rh.Get("Subject"), id) {
		t.Errorf("reply copy: subject %q body %q", rh.Get("Subject"), daemontest.Body(t, reply))
	}

	// The reporter answers the acknowledgement (subject tag): both members get it.
	h.MustSend("rep@out.test", []string{"security@ex.test"},
		"From: rep@out.test\nTo: security@ex.test\nSubject: Re: ["+id+"] Vulnerability report received\nMessage-ID: <r2@out.test>\n\nMore details.\n")
	msgs = h.Settle(6)
	for _, m := range msgs[4:] {
		if m.To[0] != "alice@ex.test" && m.To[0] != "bob@ex.test" {
			t.Errorf("reporter reply went to %v", m.To)
		}
		if !strings.Contains(daemontest.Body(t, m), "(the reporter)") {
			t.Errorf("reporter reply copy does not say it is from the reporter")
		}
	}

	// Bob writes to the incident address directly.
	h.MustSend("bob@ex.test", []string{"security+" + id + "@ex.test"}, "From: bob@ex.test\nSubject: fix idea\nMessage-ID: <b1@ex.test>\n\nPatch attached soon.\n")
	msgs = h.Settle(7)
	if msgs[6].To[0] != "alice@ex.test" {
		t.Errorf("Bob's mail went to %v, want alice", msgs[6].To)
	}

	// All four messages sit on one incident.
	var n int
	h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		n = len(incs)
		recs, _ := incidentdb.Messages(tx, incs[0].ID)
		if len(recs) != 4 {
			t.Errorf("incident holds %d messages, want 4", len(recs))
		}
		return nil
	})
	if n != 1 {
		t.Errorf("%d incidents, want 1", n)
	}
}

// TestStrangerCannotJoinThread: mail from outside to an incident address, or
// citing its messages, is a new report, and the answer is the same as for any
// new report (docs/design.md §2).
func TestStrangerCannotJoinThread(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "bug", "details"))
	msgs := h.Settle(3)
	rh := daemontest.Header(t, daemontest.To(msgs, "rep@out.test")[0])
	id := idRE.FindString(rh.Get("Subject"))
	ch := daemontest.Header(t, daemontest.To(msgs, "alice@ex.test")[0])
	copyID := ch.Get("Message-Id")

	h.MustSend("mallory@evil.test", []string{"security+" + id + "@ex.test"},
		"From: mallory@evil.test\nSubject: Re: ["+id+"] bug\nIn-Reply-To: "+copyID+"\nMessage-ID: <m1@evil.test>\n\nlet me in\n")
	msgs = h.Settle(6)
	ack := daemontest.To(msgs, "mallory@evil.test")
	if len(ack) != 1 {
		t.Fatalf("stranger got %d messages, want one acknowledgement of a new report", len(ack))
	}
	sh := daemontest.Header(t, ack[0])
	if got := idRE.FindString(sh.Get("Subject")); got == id || got == "" {
		t.Errorf("stranger's mail joined %q, want a new incident", got)
	}
	var inc int
	h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		inc = len(incs)
		return nil
	})
	if inc != 2 {
		t.Errorf("%d incidents, want 2: the stranger's mail is a new report", inc)
	}
}

// TestAcknowledgementRules covers RFC 3834 and docs/threat-model.md B8.
func TestAcknowledgementRules(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	// Automatic mail: the SRC gets it, nobody is answered.
	h.MustSend("bot@out.test", []string{"security@ex.test"}, "From: bot@out.test\nAuto-Submitted: auto-generated\nSubject: scan\n\nx\n")
	h.MustSend("list@out.test", []string{"security@ex.test"}, "From: list@out.test\nList-Id: <l.out.test>\nSubject: digest\n\nx\n")
	h.MustSend("", []string{"security@ex.test"}, "From: mailer-daemon@out.test\nSubject: failure\n\nx\n")
	// Flooding from one address: one acknowledgement a day.
	for i := 0; i < 5; i++ {
		h.MustSend("flood@out.test", []string{"security@ex.test"}, daemontest.Report("flood@out.test", fmt.Sprintf("n%d", i), "x"))
	}
	msgs := h.Settle(3*2 + 5*2 + 1)
	for _, a := range []string{"bot@out.test", "list@out.test", "mailer-daemon@out.test"} {
		if n := len(daemontest.To(msgs, a)); n != 0 {
			t.Errorf("%s got %d replies, want 0", a, n)
		}
	}
	if n := len(daemontest.To(msgs, "flood@out.test")); n != 1 {
		t.Errorf("flood@out.test got %d acknowledgements, want 1", n)
	}
	if n := len(daemontest.To(msgs, "alice@ex.test")); n != 8 {
		t.Errorf("alice got %d copies, want all 8 reports", n)
	}
}

// TestLoopAndDuplicate: our own mail coming back is kept but causes nothing
// (docs/threat-model.md B9); the same bytes twice (a lost 250, RFC 1047) are taken once.
func TestLoopAndDuplicate(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.MustSend("x@out.test", []string{"security@ex.test"}, "From: x@out.test\nX-Loop: security@ex.test\nSubject: loop\n\nx\n")
	dup := daemontest.Report("rep@out.test", "once", "x")
	h.MustSend("rep@out.test", []string{"security@ex.test"}, dup)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, dup)
	h.Settle(3)
	h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		if len(incs) != 1 {
			t.Errorf("%d incidents, want 1", len(incs))
		}
		return nil
	})
}

// TestBadInputTable: each wrong input gets its exact reply code through the
// whole daemon, and nothing is stored.
func TestBadInputTable(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{Extra: "max_message_bytes = 200000\nmax_recipients = 3\n"}, daemon.Options{})
	ok := "From: a@out.test\nSubject: s\n\nbody\n"
	tests := []struct {
		name     string
		to       []string
		data     string // sent as is: no CRLF conversion
		code     int
		enhanced string
	}{
		{"unknown recipient", []string{"postmaster@ex.test"}, crlf(ok), 550, "5.1.1"},
		{"relay attempt", []string{"victim@gmail.test"}, crlf(ok), 550, "5.1.1"},
		{"announce is output only", []string{"announce@ex.test"}, crlf(ok), 550, "5.7.1"},
		{"oversize message", []string{"security@ex.test"}, crlf("From: a@out.test\n\n" + strings.Repeat(strings.Repeat("y", 998)+"\n", 210)), 552, "5.3.4"},
		{"bare LF", []string{"security@ex.test"}, "From: a@out.test\r\nSubject: s\r\n\r\nline\nnext\r\n", 550, "5.5.2"},
		{"bare CR", []string{"security@ex.test"}, "From: a@out.test\r\nSubject: s\r\n\r\nline\rnext\r\n", 550, "5.5.2"},
		{"broken MIME", []string{"security@ex.test"}, crlf("From: a@out.test\nContent-Type: multipart/mixed\n\nno boundary\n"), 554, "5.6.0"},
		{"8-bit headers", []string{"security@ex.test"}, crlf("From: a@out.test\nSubject: caf\xc3\xa9\n\nx\n"), 554, "5.6.0"},
		{"header over the limit", []string{"security@ex.test"}, crlf("From: a@out.test\n" + strings.Repeat("X-Pad: "+strings.Repeat("h", 900)+"\n", 120) + "\nx\n"), 552, "5.3.4"},
		{"too many recipients", []string{"security@ex.test", "security+SEC-2026-0001@ex.test", "security+SEC-2026-0002@ex.test", "security+SEC-2026-0003@ex.test"}, crlf(ok), 452, "4.5.3"},
		{"too many hops", []string{"security@ex.test"}, crlf(strings.Repeat("Received: from a by b; Mon, 23 Nov 2026 09:00:00 +0000\n", 51) + ok), 554, "5.4.6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Raw bytes: go-smtp's client would turn a bare LF into CRLF.
			err := daemontest.SendRawSMTP(h.Addr(), "a@out.test", tt.to, []byte(tt.data))
			c, e := daemontest.Code(err)
			if c != tt.code || e != tt.enhanced {
				t.Errorf("send = %v (%d %s), want %d %s", err, c, e, tt.code, tt.enhanced)
			}
		})
	}
	t.Run("DATA before RCPT", func(t *testing.T) {
		c, err := smtp.Dial(h.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.test"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("a@out.test", nil); err != nil {
			t.Fatal(err)
		}
		_, err = c.Data()
		if got, _ := daemontest.Code(err); got != 502 && got != 503 {
			t.Errorf("DATA before RCPT = %v, want 503 (bad sequence)", err)
		}
	})
	h.D.View(func(tx *bolt.Tx) error {
		if incs, _ := incidentdb.List(tx); len(incs) != 0 {
			t.Errorf("refused mail created %d incidents", len(incs))
		}
		return nil
	})
	if n := len(h.Rec.Messages()); n != 0 {
		t.Errorf("refused mail caused %d outbound messages", n)
	}
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// TestStorageFailure: a commit that fails answers 451 (never 250, never 554)
// and leaves nothing half-written; the sender's retry then succeeds once.
func TestStorageFailure(t *testing.T) {
	fail := true
	h := daemontest.New(t, daemontest.Config{}, daemon.WithBeforeCommit(daemon.Options{}, func(tx *bolt.Tx) error {
		if fail {
			return errors.New("bbolt: injected disk failure /var/lib/embargo/secret-path")
		}
		return nil
	}))
	raw := daemontest.Report("rep@out.test", "storage", "x")
	err := h.Send("rep@out.test", []string{"security@ex.test"}, raw)
	c, e := daemontest.Code(err)
	if c != 451 || e != "4.3.0" {
		t.Fatalf("send with failing commit = %v, want 451 4.3.0", err)
	}
	if strings.Contains(err.Error(), "secret-path") || strings.Contains(err.Error(), "bbolt") {
		t.Errorf("internal error text reached the client: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(h.Rec.Messages()); n != 0 {
		t.Fatalf("%d messages left after a failed commit", n)
	}
	h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		rows, _ := queue.List(tx)
		if len(incs) != 0 || len(rows) != 0 {
			t.Errorf("after a failed commit: %d incidents, %d queue rows; want none", len(incs), len(rows))
		}
		return nil
	})
	fail = false
	h.MustSend("rep@out.test", []string{"security@ex.test"}, raw)
	h.Settle(3)
	h.D.View(func(tx *bolt.Tx) error {
		incs, _ := incidentdb.List(tx)
		if len(incs) != 1 || incs[0].ID[len(incs[0].ID)-4:] != "0001" {
			t.Errorf("after retry: %v, want exactly incident 0001 (no ID burnt by the failure)", incs)
		}
		return nil
	})
}

// TestRestartLosesNothing: stop while mail is queued (the relay refusing for
// now), start again, and every copy is delivered once.
func TestRestartLosesNothing(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{MinBackoff: 50 * time.Millisecond})
	for _, a := range []string{"alice@ex.test", "bob@ex.test", "rep1@out.test", "rep2@out.test", "rep3@out.test"} {
		h.Rec.FailRcpt(a, 451)
	}
	for i := 1; i <= 3; i++ {
		h.MustSend(fmt.Sprintf("rep%d@out.test", i), []string{"security@ex.test"}, daemontest.Report(fmt.Sprintf("rep%d@out.test", i), "r", "x"))
	}
	time.Sleep(200 * time.Millisecond)
	h.Stop()
	var queued int
	db, err := daemon.OpenStore(h.Dir, true)
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error { rows, _ := queue.List(tx); queued = len(rows); return nil })
	db.Close()
	if queued != 9 {
		t.Fatalf("%d rows queued at stop, want 9", queued)
	}
	for _, a := range []string{"alice@ex.test", "bob@ex.test", "rep1@out.test", "rep2@out.test", "rep3@out.test"} {
		h.Rec.FailRcpt(a, 0)
	}
	h.Start()
	msgs := h.Settle(9)
	seen := map[string]int{}
	for _, m := range msgs {
		mh := daemontest.Header(t, m)
		seen[mh.Get("Message-Id")]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

// TestPermanentFailureAlertsSRC: a relay 5xx is reported to the SRC, never to
// the sender of the triggering mail (docs/threat-model.md B8, B11).
func TestPermanentFailureAlertsSRC(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.Rec.FailRcpt("bob@ex.test", 550)
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
	msgs := h.Settle(3) // ack, alice's copy, alice's alert about bob
	alerts := 0
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		mh := daemontest.Header(t, m)
		if strings.Contains(mh.Get("Subject"), "delivery failed") {
			alerts++
			if b := daemontest.Body(t, m); !strings.Contains(b, "bob@ex.test") || !strings.Contains(b, "550") {
				t.Errorf("alert body does not name the recipient and reason:\n%s", b)
			}
		}
	}
	if alerts != 1 {
		t.Errorf("alice got %d alerts, want 1", alerts)
	}
	if n := len(daemontest.To(msgs, "rep@out.test")); n != 1 {
		t.Errorf("the reporter got %d messages, want only the acknowledgement", n)
	}
}

// TestCorruptStoreRefusesToStart: a damaged file stops start-up before any
// listener opens, with a message that says how to restore (docs/threat-model.md A5).
func TestCorruptStoreRefusesToStart(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "x", "y"))
	h.Settle(3)
	h.Stop()
	path := filepath.Join(h.Dir, daemon.DBFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Break both meta pages (page 0 and 1): bbolt cannot recover either.
	pageSize := 4096
	for _, off := range []int{16, pageSize + 16} {
		for i := 0; i < 64; i++ {
			b[off+i] ^= 0xff
		}
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	err = daemontest.StartErr(t, h.Config(), h.Opts)
	if err == nil {
		t.Fatal("daemon started on a corrupt store")
	}
	for _, want := range []string{"consistency check", "embargo backup", "restore"} {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(want)) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestLooseStorePermissionsRefused: a group-readable store is refused (docs/threat-model.md D10).
func TestLooseStorePermissionsRefused(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.Stop()
	os.Chmod(filepath.Join(h.Dir, daemon.DBFile), 0o644)
	if err := daemontest.StartErr(t, h.Config(), h.Opts); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("start with a 0644 store = %v, want a refusal naming chmod 600", err)
	}
}

// TestHeaderInjection: an encoded CR LF in a report's subject cannot add a
// header to the copies we build (docs/threat-model.md B10).
func TestHeaderInjection(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	h.MustSend("rep@out.test", []string{"security@ex.test"},
		"From: Eve <rep@out.test>\nSubject: =?UTF-8?Q?x=0D=0ABcc:_a@evil.test?=\nMessage-ID: <inj@out.test>\n\nbody\n")
	for _, m := range h.Settle(3) {
		mh := daemontest.Header(t, m)
		if mh.Has("Bcc") || strings.Contains(string(m.Data), "\r\nBcc:") {
			t.Errorf("message to %v gained a Bcc header:\n%s", m.To, m.Data)
		}
		if len(m.To) != 1 || strings.Contains(m.To[0], "evil") {
			t.Errorf("envelope recipients %v", m.To)
		}
	}
}

// TestPoisonMessage: a message that makes processing panic is quarantined
// and answered 250 (it would otherwise come back forever), the SRC is told,
// the daemon keeps serving, and the panic puts no message content in the logs
// (docs/threat-model.md A6, G6).
func TestPoisonMessage(t *testing.T) {
	const canary = "CANARY-poison-7f3a"
	h := daemontest.New(t, daemontest.Config{}, daemon.WithPanic(daemon.Options{}, func(raw []byte) {
		if strings.Contains(string(raw), canary) {
			panic("parser exploded on: " + string(raw))
		}
	}))
	if err := h.Send("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "poison", canary)); err != nil {
		t.Fatalf("poison message: %v, want 250 (quarantined)", err)
	}
	h.MustSend("rep2@out.test", []string{"security@ex.test"}, daemontest.Report("rep2@out.test", "fine", "x"))
	msgs := h.Settle(2 + 3) // the alert to alice and bob, then ack + 2 copies
	alerts := 0
	for _, m := range msgs {
		if strings.Contains(string(m.Data), "quarantine") {
			alerts++
		}
		if strings.Contains(string(m.Data), canary) {
			t.Error("the poison message's content left the daemon")
		}
	}
	if alerts != 2 {
		t.Errorf("%d quarantine alerts, want one per SRC member", alerts)
	}
	if strings.Contains(h.Logs.String(), canary) {
		t.Error("the panic put message content in the log")
	}
}
