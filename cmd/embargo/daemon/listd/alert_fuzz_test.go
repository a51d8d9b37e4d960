package listd

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// FuzzDeliveryAlert delivers a report's acknowledgement and committee
// copies through the real queue (queue.New, the SMTP relay of
// queue.NewRelay, the service as its Sealer) to a relay on loopback that
// refuses every transaction at the stage (MAIL, RCPT, DATA or the final
// dot), with the code (5xx) and the reply text the fuzzer chooses: the
// text of a hostile relay or remote MX, which reaches the committee in
// the delivery-failure alert (Service.Alert, the worker's Failed hook).
// The report's subject and its sender's name come from the fuzzer too.
// Each refused row must raise one alert per member, the alerts themselves
// none (they are refused as well, and stay failed); every row is then
// made as the delivery worker makes it and checked by checkQueued
// (docs/threat-model.md B2, B10, D6, E5), and each alert's text by
// checkQuotedText: the relay's words arrive as one readable line.
func FuzzDeliveryAlert(f *testing.F) {
	k := newStoreKeys(f)
	relay := newHostileRelay(f)
	f.Add("heap overflow in the parser", "Rep Orter", byte(refuseRcpt), byte(50), "5.1.1 <rep@out.test>: Recipient address rejected: User unknown")
	// More in testdata/fuzz/FuzzDeliveryAlert: replies with CR inside a
	// line, "/" commands after a CR, encoded-word lookalikes, header
	// lines, very long and many lines, NUL, invalid UTF-8, bidi controls.
	f.Fuzz(func(t *testing.T, subject, name string, stage, code byte, text string) {
		relay.refuse(int(stage), permanentCode(code), text)
		s, db := storeService(t, k)
		raw, ok := fuzzReport(subject, name, "Steps to reproduce.\n", "")
		env := Envelope{From: "rep@out.test", To: []string{"security@ex.test"}, Client: "192.0.2.1"}
		if !ok || s.Handle(context.Background(), env, raw) != nil {
			openIncident(t, s, db, nil) // a report that cannot be written or is refused: a plain one
		}
		refused := deliverAll(t, s, db, relay.addr())
		kinds := map[string]int{}
		for _, c := range checkQueued(t, s, db, 0, k.readers()) {
			kinds[c.Kind]++
			if c.Kind == "alert" {
				checkQuotedText(t, c)
			}
		}
		if kinds["alert"] != 2*refused {
			t.Fatalf("%d rows refused, %d alerts queued, want one to each member for each (%v)", refused, kinds["alert"], kinds)
		}
	})
}

// deliverAll runs the delivery worker on db through the SMTP relay at
// addr, the service alerting the committee of each row that fails, until
// every row failed, and returns how many rows that were not alerts
// failed. A row still queued after a minute fails the test.
func deliverAll(t *testing.T, s *Service, db *bolt.DB, addr string) int {
	t.Helper()
	relay, err := queue.NewRelay("smtp://"+addr, queue.RelayOptions{HeloName: "ex.test", CommandTimeout: 10 * time.Second, DataTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w := queue.New(db, relay, queue.Options{Now: s.o.Now, Sealer: s, Failed: s.Alert, MinBackoff: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() {
		cancel()
		<-done
		if c, ok := relay.(interface{ CloseIdle() }); ok {
			c.CloseIdle() // QUIT: the relay serves the next execution
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		var rows []queue.Row
		if err := db.View(func(tx *bolt.Tx) (err error) { rows, err = queue.List(tx); return err }); err != nil {
			t.Fatal(err)
		}
		failed, refused := 0, 0
		for _, r := range rows {
			if r.State == queue.StateFailed {
				failed++
				if !r.NoAlert {
					refused++
				}
			}
		}
		if failed == len(rows) && (refused == 0 || len(rows) > refused) {
			return refused
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute, %d of %d rows failed: %+v", failed, len(rows), rows)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkQuotedText checks the text of a copy that quotes what an outsider
// wrote (a relay's reply) as its recipient's mail client decodes it (the
// first text/plain part, its transfer encoding and charset undone, not
// cleaned as the service's own parser cleans what it reads): valid UTF-8,
// no control character but the CR LF line ends and tab (a terminal would
// run an escape sequence; a lone CR is a line end to many a reader), no
// format character (a bidi override reorders what the member reads), and
// no line that starts with "/" (docs/threat-model.md E5: a member who
// replies with it unquoted must not send a command).
func checkQuotedText(t *testing.T, c madeCopy) {
	t.Helper()
	where := c.Kind + " to " + strings.Join(c.To, ",")
	e, err := gomessage.Read(bytes.NewReader(c.Inner))
	if err != nil {
		t.Fatalf("%s: does not read back: %v", where, err)
	}
	var text []byte
	err = e.Walk(func(_ []int, p *gomessage.Entity, err error) error {
		if err != nil || text != nil {
			return err
		}
		if ct, _, _ := p.Header.ContentType(); ct == "text/plain" {
			text, err = io.ReadAll(p.Body)
		}
		return err
	})
	if err != nil || text == nil {
		t.Fatalf("%s: no text/plain part that reads back (%v)", where, err)
	}
	s := strings.ReplaceAll(string(text), "\r\n", "\n")
	if !utf8.ValidString(s) {
		t.Fatalf("%s: its text is not UTF-8: %q", where, s)
	}
	if i := strings.IndexFunc(s, func(r rune) bool {
		return r != '\n' && r != '\t' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r))
	}); i >= 0 {
		t.Fatalf("%s: its text holds a control or format character at %d: %q", where, i, s)
	}
	for l := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(l, "/") {
			t.Fatalf("%s: a line starts with /: %q", where, l)
		}
	}
}
