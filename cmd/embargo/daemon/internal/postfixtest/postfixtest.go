// Package postfixtest runs a throw-away Postfix for tests: its own
// config_directory, queue_directory and data_directory under a directory of
// the test's, listening on a loopback port, logging to a file (postlogd)
// instead of syslog, never touching the system's instance. Tests that use
// it skip where Debian's postfix package is not installed or the test does
// not run as root (the master starts its daemons as user postfix).
package postfixtest

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
)

// Config is what an instance adds to the base configuration.
type Config struct {
	// Dir holds the instance: etc/, spool/, data/ and the maillog. The
	// postfix user must be able to traverse it (t.TempDir's parents are
	// 0700: see WorldDir).
	Dir string
	// MainCF is added after the base main.cf: host names, destinations,
	// routing, restrictions.
	MainCF string
	// MasterCF is added after the base master.cf services (the listener,
	// queue manager, cleanup, smtp, discard, logging…): e.g. local, lmtp.
	MasterCF string
	// Files are further files written to Etc (lookup tables).
	Files map[string]string
}

// Instance is a running Postfix.
type Instance struct {
	Dir  string // as configured
	Etc  string // Dir/etc, its config_directory
	Addr string // its SMTP listener, 127.0.0.1:port
}

// Etc is the config_directory an instance in dir gets, for tables named in
// Config.MainCF before it starts.
func Etc(dir string) string { return filepath.Join(dir, "etc") }

// Log returns the instance's maillog.
func (p *Instance) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.Dir, "maillog"))
	return string(b)
}

// WorldDir is a temporary directory the postfix and nobody users can reach.
func WorldDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "embargo-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o777)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// baseMainCF is every instance's main.cf: %[1]s spool, %[2]s data, %[3]s
// the directory of the maillog.
const baseMainCF = `# A private instance for embargo's tests.
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtp_dns_support_level = disabled
maillog_file = %[3]s/maillog
maillog_file_prefixes = %[3]s
`

// baseMasterCF is every instance's master.cf, none of it chrooted; %s is
// the SMTP listener, host:port.
const baseMasterCF = `%s inet n - n - - smtpd
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
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
`

// Need skips the test unless an instance can run here: a test calls it
// before it sets up anything else.
func Need(t testing.TB) {
	t.Helper()
	commands(t)
}

// commands finds postfix and the master, or skips the test.
func commands(t testing.TB) (postfixCmd, masterCmd string) {
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
	return postfixCmd, filepath.Join(strings.TrimSpace(string(out)), "master")
}

// Start configures and starts an instance, stops it when the test ends (and
// logs its maillog when the test failed), and returns once its SMTP port
// answers.
func Start(t testing.TB, c Config) *Instance {
	t.Helper()
	postfixCmd, masterCmd := commands(t)
	p := &Instance{Dir: c.Dir, Etc: Etc(c.Dir), Addr: FreeAddr(t)}
	spool, data := filepath.Join(c.Dir, "spool"), filepath.Join(c.Dir, "data")
	for _, d := range []string{p.Etc, spool, data} {
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
	files := map[string]string{
		"main.cf":   fmt.Sprintf(baseMainCF, spool, data, c.Dir) + c.MainCF,
		"master.cf": fmt.Sprintf(baseMasterCF, p.Addr) + c.MasterCF,
	}
	for name, text := range c.Files {
		files[name] = text
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(p.Etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// "postfix check" creates the queue directories with their owners.
	if out, err := exec.Command(postfixCmd, "-c", p.Etc, "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix check: %v\n%s\n%s", err, out, p.Log())
	}
	master := exec.Command(masterCmd, "-c", p.Etc, "-d")
	var out bytes.Buffer
	master.Stdout, master.Stderr = &out, &out
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		Stop(master)
		if t.Failed() {
			t.Logf("postfix log:\n%s", p.Log())
		}
	})
	WaitListen(t, p.Addr, func() string { return out.String() + "\n" + p.Log() })
	return p
}

// WaitListen returns once addr accepts connections, and fails the test
// after 15 s with what why returns (the server's output).
func WaitListen(t testing.TB, addr string, why func() string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s: %s", addr, why())
		}
	}
}

// FreeAddr is a free loopback address, host:port, for a server to listen on.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Stop ends a server started by the test with SIGTERM, and kills it after
// 10 s.
func Stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
