package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/postfixtest"
)

// These tests run the client against Postfix itself: smtp-sink, its
// test server, and a private Postfix instance whose smtpd takes the
// copies and relays them to a recording server. They skip where Postfix
// is not installed, and the instance where the test is not root (its
// master starts the daemons as user postfix).

// startSink runs smtp-sink with args, dumping every message into a
// directory, and returns its address and that directory.
func startSink(t *testing.T, args ...string) (string, string) {
	t.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/smtp-sink"); err != nil {
			t.Skip("smtp-sink is not installed (Debian package postfix)")
		}
	}
	dir := postfixtest.WorldDir(t)
	addr := postfixtest.FreeAddr(t)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // smtp-sink refuses to run as root without it
	}
	args = append(args, "-d", dir+"/%H%M%S.", addr, "100")
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { postfixtest.Stop(cmd) })
	postfixtest.WaitListen(t, addr, out.String)
	return addr, dir
}

// sinkMessages reads smtp-sink's dumps: per file, the recipients and the
// message as received (LF line ends, after smtp-sink's own fields).
func sinkMessages(t *testing.T, dir string, want int) map[string]string {
	t.Helper()
	var files []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		files, _ = filepath.Glob(filepath.Join(dir, "*"))
		if len(files) >= want || time.Now().After(deadline) {
			break
		}
	}
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		rcpt := between(s, "X-Rcpt-Args: <", ">")
		// smtp-sink's Received field is three lines; the message follows.
		i := strings.Index(s, "Received: from ")
		if i < 0 {
			t.Fatalf("dump %s: %q", f, s)
		}
		rest := s[i:]
		for range 3 {
			rest = rest[strings.IndexByte(rest, '\n')+1:]
		}
		out[rcpt] = strings.TrimSuffix(rest, "\n") // smtp-sink ends the dump with an empty line
	}
	return out
}

func between(s, a, b string) string {
	_, s, _ = strings.Cut(s, a)
	s, _, _ = strings.Cut(s, b)
	return s
}

// TestSmtpSink: Postfix's smtp-sink offers PIPELINING; 300 copies over
// one connection arrive whole and unstuffed. With refusals configured it
// stops offering PIPELINING, and the lockstep path keeps each refusal.
func TestSmtpSink(t *testing.T) {
	addr, dir := startSink(t)
	c := dial(t, Config{Addr: addr, HeloName: "client.test"})
	if !c.Pipelining() {
		t.Fatal("smtp-sink offers PIPELINING, the client did not see it")
	}
	txns := copies(body(t, shared), 300)
	res, err := c.Send(context.Background(), txns)
	if err != nil {
		t.Fatal(err)
	}
	wantDelivered(t, res)
	got := sinkMessages(t, dir, 300)
	if len(got) != 300 {
		t.Fatalf("smtp-sink dumped %d messages, want 300", len(got))
	}
	for _, txn := range txns {
		want := strings.ReplaceAll(string(txn.Header)+shared, "\r\n", "\n")
		if got[txn.To[0]] != want {
			t.Fatalf("%s received %q, want %q", txn.To[0], got[txn.To[0]], want)
		}
	}

	addr, _ = startSink(t, "-r", "RCPT")
	c = dial(t, Config{Addr: addr})
	res, err = c.Send(context.Background(), copies(body(t, shared), 3))
	if err != nil {
		t.Fatal(err)
	}
	var re *Reply
	for i, r := range res {
		if !r.Done || r.Err != nil || !errors.As(r.Rcpt[0], &re) || !re.Temporary() {
			t.Errorf("result %d = %+v, want a temporary refusal at RCPT", i, r)
		}
	}
	addr, _ = startSink(t, "-f", ".")
	c = dial(t, Config{Addr: addr})
	res, err = c.Send(context.Background(), copies(body(t, shared), 3))
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Done || !errors.As(res[0].Err, &re) || re.Stage != "end of data" || !re.Permanent() || res[1].Done {
		t.Errorf("refused end of data: %+v", res)
	}
}

// TestPostfix: a private Postfix smtpd takes the pipelined copies (its
// access table refuses one recipient and defers another, as a relay's
// policy would), queues them and relays them to a recording server: each
// arrives once with its own header and the shared body byte for byte, and
// Postfix logs no pipelining complaint.
func TestPostfix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Postfix instance")
	}
	rec := queuetest.New(t, queuetest.Options{})
	rec.Allow(transportOnly+" (and Postfix may add header fields)", queuetest.RuleHeader)
	pf := startPostfix(t, rec.Addr(), "refused@example.net REJECT no such user\nlater@example.net DEFER_IF_PERMIT try later\n")
	c := dial(t, Config{Addr: pf.Addr, HeloName: "client.test"})
	if !c.Pipelining() {
		t.Fatal("Postfix offers PIPELINING, the client did not see it")
	}
	txns := copies(body(t, shared), 200)
	txns[10].To = []string{"refused@example.net"}
	txns[20].To = []string{"later@example.net"}
	txns[30].To = []string{"a@example.net", "refused@example.net", "b@example.net"}
	res, err := c.Send(context.Background(), txns)
	if err != nil {
		t.Fatal(err)
	}
	var re *Reply
	if !res[10].Done || !errors.As(res[10].Rcpt[0], &re) || !re.Permanent() {
		t.Errorf("refused: %+v", res[10])
	}
	if !res[20].Done || !errors.As(res[20].Rcpt[0], &re) || !re.Temporary() {
		t.Errorf("deferred: %+v", res[20])
	}
	if r := res[30]; !r.Done || r.Err != nil || r.Rcpt[0] != nil || r.Rcpt[1] == nil || r.Rcpt[2] != nil {
		t.Errorf("mixed: %+v", r)
	}
	// 200 transactions, 2 refused; the one with two accepted recipients
	// stays one message.
	msgs := rec.WaitFor(198, 60*time.Second)
	if len(msgs) != 198 {
		t.Fatalf("the recorder got %d messages through Postfix, want 198\n%s", len(msgs), pf.Log())
	}
	byRcpt := map[string][]byte{}
	for _, m := range msgs {
		for _, to := range m.To {
			byRcpt[to] = m.Data
		}
	}
	for i, txn := range txns {
		if i == 10 || i == 20 {
			continue
		}
		want := string(txn.Header) + shared
		for _, to := range txn.To {
			if to == "refused@example.net" {
				continue
			}
			got := string(byRcpt[to])
			// Postfix adds its Received field on top, and nothing else here.
			if _, after, ok := strings.Cut(got, "\r\nList-Unsubscribe:"); !ok || "List-Unsubscribe:"+after != want {
				t.Fatalf("%s received %q, want %q after Postfix's Received", to, got, want)
			}
		}
	}
	if l := pf.Log(); strings.Contains(l, "pipelining") || strings.Contains(l, "warning") {
		t.Errorf("Postfix complained:\n%s", l)
	}
}

// startPostfix starts a private Postfix that checks recipients against
// access (a check_recipient_access table) and relays example.net to nexthop.
func startPostfix(t *testing.T, nexthop, access string) *postfixtest.Instance {
	t.Helper()
	dir := postfixtest.WorldDir(t)
	return postfixtest.Start(t, postfixtest.Config{
		Dir: dir,
		MainCF: fmt.Sprintf(`meta_directory = /etc/postfix
myhostname = mx.pipeline.test
mydomain = pipeline.test
myorigin = pipeline.test
mydestination =
relay_domains = example.net
local_header_rewrite_clients =
smtpd_recipient_restrictions = check_recipient_access texthash:%[1]s/access, permit_mynetworks, reject
transport_maps = texthash:%[1]s/transport
`, postfixtest.Etc(dir)),
		Files: map[string]string{
			"access":    access,
			"transport": "example.net smtp:[" + strings.Replace(nexthop, ":", "]:", 1) + "\n",
		},
	})
}
