package daemon_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/postfixtest"
	"github.com/embargo-project/embargo/workflow"
)

// startPostfix starts a private Postfix in dir (traversable by the postfix
// user) with the contrib/postfix snippets routing the list domain to
// embargo's LMTP listener at lmtpNexthop. extra are main.cf lines added last.
func startPostfix(t *testing.T, dir, lmtpNexthop string, extra ...string) *postfixtest.Instance {
	t.Helper()
	etc := postfixtest.Etc(dir)
	contrib := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "contrib", "postfix", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "example.org", "ex.test")
		s = strings.ReplaceAll(s, "hash:/etc/postfix/", "texthash:"+etc+"/")
		return strings.ReplaceAll(s, "inet:127.0.0.1:8024", lmtpNexthop)
	}
	return postfixtest.Start(t, postfixtest.Config{
		Dir: dir,
		MainCF: `myhostname = mx.ex.test
mydomain = ex.test
myorigin = ex.test
mydestination = ex.test
smtpd_banner = $myhostname ESMTP
` + contrib("main.cf") + strings.Join(extra, "\n") + "\n",
		MasterCF: `local     unix  - n n -    - local
lmtp      unix  - - n -    - lmtp
` + contrib("master.cf"),
		Files: map[string]string{"embargo_transport": contrib("embargo_transport")},
	})
}

// TestPostfixToLMTP routes mail through a real Postfix, configured with
// contrib/postfix, to embargo's LMTP listener, over TCP (the contrib default)
// and over a unix socket.
func TestPostfixToLMTP(t *testing.T) {
	postfixtest.Need(t)
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel() // each instance has its own directories and ports
			// Not t.TempDir: Postfix's daemons run as user postfix and must
			// reach their queue (and the socket) through 0755 directories.
			dir, err := os.MkdirTemp("", "embargo-postfix-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			os.Chmod(dir, 0o755)

			listen := "127.0.0.1:0"
			if network == "unix" {
				listen = "unix:" + filepath.Join(dir, "run", "lmtp.sock")
			}
			h := daemontest.New(t, daemontest.Config{Extra: fmt.Sprintf("\n[lmtp]\nlisten = %q\n", listen)}, daemon.Options{})
			nexthop := "inet:" + h.D.LMTPAddr().String()
			if network == "unix" {
				nexthop = "unix:" + strings.TrimPrefix(listen, "unix:")
			}
			p := startPostfix(t, dir, nexthop)

			// A report to the list, and a reply to an incident sub-address.
			if err := daemontest.SendSMTP(p.Addr, "reporter@example.net", []string{"security@ex.test"},
				[]byte(strings.ReplaceAll(daemontest.Report("reporter@example.net", "via postfix", "CANARY-postfix"), "\n", "\r\n"))); err != nil {
				t.Fatalf("send to Postfix: %v\n%s", err, p.Log())
			}
			msgs := h.WaitMail(3) // the acknowledgement and the two committee copies
			daemontest.MustContain(t, "a committee copy", string(daemontest.To(msgs, "alice@ex.test")[0].Data), "CANARY-postfix")
			if err := daemontest.SendSMTP(p.Addr, "alice@ex.test", []string{"security+SEC-2026-0001@ex.test"},
				[]byte("From: alice@ex.test\r\nTo: security+SEC-2026-0001@ex.test\r\nSubject: Re: [SEC-2026-0001] via postfix\r\nMessage-ID: <r1@ex.test>\r\n\r\nConfirmed.\r\n")); err != nil {
				t.Fatalf("send the reply to Postfix: %v", err)
			}
			h.WaitMail(4) // the reply's copy to bob
			// An address embargo does not serve is refused by Postfix at RCPT.
			err = daemontest.SendSMTP(p.Addr, "reporter@example.net", []string{"stranger@ex.test"}, []byte("Subject: x\r\n\r\nx\r\n"))
			if c, _ := daemontest.Code(err); c != 550 {
				t.Errorf("RCPT to stranger@ex.test via Postfix = %v, want 550", err)
			}

			// The archived report came through Postfix and LMTP.
			var archived strings.Builder
			h.D.View(func(tx *bolt.Tx) error {
				recs, err := incidentdb.Messages(tx, "SEC-2026-0001")
				for _, r := range recs {
					raw, _ := incidentdb.Raw(tx, r.Seq)
					archived.Write(raw)
				}
				return err
			})
			daemontest.MustContain(t, "archived report", archived.String(), "by mx.ex.test (Postfix)", "CANARY-postfix", "Confirmed.")
			daemontest.MustContain(t, "postfix log", p.Log(), "relay=", "status=sent")
			t.Logf("%s: delivered through Postfix to %s", network, nexthop)
		})
	}
}

// TestPostfixSplitsRecipients: Postfix sends one message for two of a
// reporter's incident addresses as one LMTP transaction; embargo takes the
// first and answers 452 4.5.3 to the second at RCPT, and Postfix delivers
// the second in a later transaction, which embargo takes (the same bytes
// for another recipient are no duplicate). Both incidents get the message.
func TestPostfixSplitsRecipients(t *testing.T) {
	postfixtest.Need(t)
	dir, err := os.MkdirTemp("", "embargo-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	h := daemontest.New(t, daemontest.Config{Extra: "\n[lmtp]\nlisten = \"127.0.0.1:0\"\n"}, daemon.Options{})
	// Deferred recipients are retried within seconds, not minutes.
	p := startPostfix(t, dir, "inet:"+h.D.LMTPAddr().String(),
		"queue_run_delay = 1s", "minimal_backoff_time = 1s", "maximal_backoff_time = 2s")

	const rep = "reporter@example.net"
	for i := 1; i <= 2; i++ {
		h.MustSend(rep, []string{"security@ex.test"}, daemontest.Report(rep, fmt.Sprintf("report %d", i), "details"))
	}
	msgs := func(id string) int {
		var n int
		h.D.View(func(tx *bolt.Tx) error {
			recs, _ := incidentdb.Messages(tx, workflow.ID(id))
			n = len(recs)
			return nil
		})
		return n
	}
	if msgs("SEC-2026-0001") != 1 || msgs("SEC-2026-0002") != 1 {
		t.Fatal("the two reports did not make two incidents")
	}
	to := []string{"security+SEC-2026-0001@ex.test", "security+SEC-2026-0002@ex.test"}
	body := "From: " + rep + "\r\nTo: " + strings.Join(to, ", ") + "\r\nSubject: both\r\nMessage-ID: <both@example.net>\r\n\r\nAbout both reports.\r\n"
	if err := daemontest.SendSMTP(p.Addr, rep, to, []byte(body)); err != nil {
		t.Fatalf("send to Postfix: %v\n%s", err, p.Log())
	}
	// Postfix retries the deferred recipient on a later queue scan; on a
	// loaded machine its own timing has let a minute pass, so the test asks
	// for the scan (`postqueue -f`, as an operator would) every few seconds.
	flushed := time.Now()
	daemontest.WaitForWithin(t, time.Minute, "both incidents to get the message", func() bool {
		if time.Since(flushed) > 3*time.Second {
			exec.Command("postqueue", "-c", filepath.Join(dir, "etc"), "-f").Run()
			flushed = time.Now()
		}
		return msgs("SEC-2026-0001") == 2 && msgs("SEC-2026-0002") == 2
	})
	daemontest.MustContain(t, "postfix log", p.Log(), "452 4.5.3", "status=deferred", "status=sent")
}
