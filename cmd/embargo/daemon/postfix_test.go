package daemon_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/workflow"
)

// postfixMasterCF runs a private Postfix with the services a local delivery
// over LMTP needs, none chrooted, logging to a file (postlogd) instead of
// syslog. %s is the SMTP listener, host:port.
const postfixMasterCF = `%s inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
`

// postfixInstance is a throw-away Postfix: its own config_directory,
// queue_directory and data_directory in a temporary directory, listening on
// loopback only, with the contrib/postfix snippets routing the list domain to
// embargo's LMTP listener.
type postfixInstance struct {
	dir, smtpAddr string
	master        *exec.Cmd
}

func (p *postfixInstance) log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

// needPostfix skips unless Debian's postfix is installed and the test runs as
// root (the master starts its daemons as the postfix user).
func needPostfix(t *testing.T) (postfixCmd, masterCmd string) {
	t.Helper()
	postfixCmd, err := exec.LookPath("postfix")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
			t.Skip("postfix is not installed (.ci/run installs it: apt-get install postfix)")
		}
		postfixCmd = "/usr/sbin/postfix"
	}
	if os.Geteuid() != 0 {
		t.Skip("a private Postfix instance needs root: its master starts the daemons as user postfix")
	}
	if _, err := user.Lookup("postfix"); err != nil {
		t.Skip("no postfix user: the package is not fully installed")
	}
	out, err := exec.Command(filepath.Join(filepath.Dir(postfixCmd), "postconf"), "-h", "-d", "daemon_directory").Output()
	if err != nil {
		t.Skipf("postconf: %v", err)
	}
	masterCmd = filepath.Join(strings.TrimSpace(string(out)), "master")
	return postfixCmd, masterCmd
}

// startPostfix configures and starts Postfix in dir (which must be
// traversable by the postfix user) and waits for its SMTP port. extra are
// main.cf lines added last.
func startPostfix(t *testing.T, dir, lmtpNexthop string, extra ...string) *postfixInstance {
	t.Helper()
	postfixCmd, masterCmd := needPostfix(t)
	p := &postfixInstance{dir: dir, smtpAddr: daemontest.FreePort(t)}
	etc, spool, data := filepath.Join(dir, "etc"), filepath.Join(dir, "spool"), filepath.Join(dir, "data")
	for _, d := range []string{etc, spool, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pf, _ := user.Lookup("postfix")
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(pf.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}

	contrib := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "contrib", "postfix", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "example.org", "ex.test")
		s = strings.ReplaceAll(s, "hash:/etc/postfix/", "texthash:"+etc+"/")
		return strings.ReplaceAll(s, "inet:127.0.0.1:8024", lmtpNexthop)
	}
	mainCF := fmt.Sprintf(`# A private instance for embargo's tests.
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.ex.test
mydomain = ex.test
myorigin = ex.test
mydestination = ex.test
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_banner = $myhostname ESMTP
maillog_file = %[3]s/maillog
maillog_file_prefixes = %[3]s
smtp_dns_support_level = disabled
`, spool, data, dir) + contrib("main.cf") + strings.Join(extra, "\n") + "\n"
	daemontest.WriteFile(t, filepath.Join(etc, "main.cf"), mainCF)
	daemontest.WriteFile(t, filepath.Join(etc, "master.cf"), fmt.Sprintf(postfixMasterCF, p.smtpAddr)+contrib("master.cf"))
	daemontest.WriteFile(t, filepath.Join(etc, "embargo_transport"), contrib("embargo_transport"))
	for _, f := range []string{"main.cf", "master.cf", "embargo_transport"} {
		os.Chmod(filepath.Join(etc, f), 0o644)
	}

	// "postfix check" creates the queue directories with their owners.
	if out, err := exec.Command(postfixCmd, "-c", etc, "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix check: %v\n%s\n%s", err, out, p.log())
	}
	p.master = exec.Command(masterCmd, "-c", etc, "-d")
	var out bytes.Buffer
	p.master.Stdout, p.master.Stderr = &out, &out
	if err := p.master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.master.Process.Signal(syscall.SIGTERM)
		p.master.Wait()
		if t.Failed() {
			t.Logf("postfix log:\n%s", p.log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", p.smtpAddr)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix did not listen on %s: %s\n%s", p.smtpAddr, out.String(), p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPostfixToLMTP routes mail through a real Postfix, configured with
// contrib/postfix, to embargo's LMTP listener, over TCP (the contrib default)
// and over a unix socket.
func TestPostfixToLMTP(t *testing.T) {
	needPostfix(t)
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
			if err := daemontest.SendSMTP(p.smtpAddr, "reporter@example.net", []string{"security@ex.test"},
				[]byte(strings.ReplaceAll(daemontest.Report("reporter@example.net", "via postfix", "CANARY-postfix"), "\n", "\r\n"))); err != nil {
				t.Fatalf("send to Postfix: %v\n%s", err, p.log())
			}
			msgs := h.WaitMail(3) // the acknowledgement and the two committee copies
			daemontest.MustContain(t, "a committee copy", string(daemontest.To(msgs, "alice@ex.test")[0].Data), "CANARY-postfix")
			if err := daemontest.SendSMTP(p.smtpAddr, "alice@ex.test", []string{"security+SEC-2026-0001@ex.test"},
				[]byte("From: alice@ex.test\r\nTo: security+SEC-2026-0001@ex.test\r\nSubject: Re: [SEC-2026-0001] via postfix\r\nMessage-ID: <r1@ex.test>\r\n\r\nConfirmed.\r\n")); err != nil {
				t.Fatalf("send the reply to Postfix: %v", err)
			}
			h.WaitMail(4) // the reply's copy to bob
			// An address embargo does not serve is refused by Postfix at RCPT.
			err = daemontest.SendSMTP(p.smtpAddr, "reporter@example.net", []string{"stranger@ex.test"}, []byte("Subject: x\r\n\r\nx\r\n"))
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
			daemontest.MustContain(t, "postfix log", p.log(), "relay=", "status=sent")
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
	needPostfix(t)
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
	if err := daemontest.SendSMTP(p.smtpAddr, rep, to, []byte(body)); err != nil {
		t.Fatalf("send to Postfix: %v\n%s", err, p.log())
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
	daemontest.MustContain(t, "postfix log", p.log(), "452 4.5.3", "status=deferred", "status=sent")
}
