package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// subscribersHarness runs a daemon whose announce list sends one-click URIs.
func subscribersHarness(t *testing.T) (*daemontest.Harness, string) {
	t.Helper()
	h := daemontest.New(t, daemontest.Config{Extra: "\n[http]\nbase_url = \"https://security.ex.test\"\n"}, daemon.Options{Commands: storeCommands()})
	return h, h.ConfigFile()
}

// notices returns the import notices among msgs, by recipient.
func notices(t *testing.T, msgs []queuetest.Message) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, m := range msgs {
		if hd := daemontest.Header(t, m); strings.Contains(hd.Get("Subject"), "You now receive") {
			for _, r := range m.To {
				n[strings.ToLower(r)]++
			}
		}
	}
	return n
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	daemontest.WriteFile(t, p, content)
	return p
}

// TestSubscribersImportMailman10k: a 10,000-line Mailman listing, imported
// through the command line while the daemon runs: every valid address is
// subscribed and has exactly one signed notice queued, with its own
// one-click URI; every invalid line is reported with its number; a second
// import queues nothing. The notices are read from the queue's rows in the
// store, held there by a relay that takes nothing: what the import did is
// what is tested, and delivering 10,000 notices through the queue (minutes
// under -race; TestSubscribersAddRemoveOffline and the daemon's
// TestImportedSubscriberOneClick deliver imported notices over SMTP) would
// add nothing to it. With -short, 2,000 lines.
func TestSubscribersImportMailman10k(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{Extra: "\n[http]\nbase_url = \"https://security.ex.test\"\n"},
		daemon.Options{Commands: storeCommands(), Relay: holdRelay{}})
	cfg := h.ConfigFile()
	n := 10000
	if testing.Short() {
		n = 2000
	}
	var b strings.Builder
	bad := map[int]string{17: "reader17 at example.net", n/2 + 1: "two@example.net, three@example.net", n - 1: "x@localhost"}
	want := map[string]bool{}
	for i := 1; i <= n; i++ {
		switch {
		case bad[i] != "":
			b.WriteString(bad[i] + "\n")
			continue
		case i%3 == 0:
			fmt.Fprintf(&b, "Reader Number %d <reader%d@example%d.net>\n", i, i, i%50)
		default:
			fmt.Fprintf(&b, "reader%d@example%d.net\n", i, i%50)
		}
		want[fmt.Sprintf("reader%d@example%d.net", i, i%50)] = true
	}
	file := writeFile(t, "members.txt", b.String())
	start := time.Now()
	out := mustCLI(t, "subscribers", "import", file, "--config", cfg)
	t.Logf("import of %d lines: %v", n, time.Since(start).Round(time.Millisecond))
	daemontest.MustContain(t, "import output", out, fmt.Sprintf("a Mailman members listing, %d lines, %d addresses", n, n-3),
		fmt.Sprintf("%d subscribed to announce@ex.test", n-3), "0 already subscribed", "3 lines skipped",
		`line 17: "reader17 at example.net" is not a plain address`, fmt.Sprintf(`line %d: "two@example.net, three@example.net"`, n/2+1),
		fmt.Sprintf(`line %d: "x@localhost"`, n-1))
	if got := strings.TrimSpace(mustCLI(t, "subscribers", "count", "--config", cfg)); got != fmt.Sprint(n-3) {
		t.Errorf("count = %s, want %d", got, n-3)
	}
	msgs := queuedNotices(t, h, true)
	// One notice to each subscriber, each with its own one-click URI.
	to, urls := map[string]bool{}, map[string]bool{}
	for _, m := range msgs {
		if len(m.To) != 1 || !want[m.To[0]] || to[m.To[0]] {
			t.Fatalf("a notice to %v: not in the listing, or a second one", m.To)
		}
		to[m.To[0]] = true
		hd := daemontest.Header(t, m)
		u := hd.Get("List-Unsubscribe")
		if !strings.Contains(hd.Get("Subject"), "You now receive") {
			t.Fatalf("notice to %v: subject %q", m.To, hd.Get("Subject"))
		}
		if !strings.HasPrefix(u, "<https://security.ex.test/unsubscribe/") || urls[u] || hd.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
			t.Fatalf("notice to %v: List-Unsubscribe %q (seen before: %v)", m.To, u, urls[u])
		}
		urls[u] = true
	}
	if len(to) != n-3 {
		t.Fatalf("%d notices queued, want one to each of %d addresses", len(to), n-3)
	}
	list := mustCLI(t, "subscribers", "list", "--config", cfg)
	if !regexp.MustCompile(`(?m)^reader3@example3\.net +Reader Number 3 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +import +0$`).MatchString(list) || strings.Count(list, "\n") != n-3+1 {
		t.Errorf("list has %d lines, or no reader3 with its name", strings.Count(list, "\n"))
	}

	// Again: nothing new, nothing queued.
	out = mustCLI(t, "subscribers", "import", file, "--config", cfg)
	daemontest.MustContain(t, "second import", out, "0 subscribed", fmt.Sprintf("%d already subscribed: nothing sent", n-3))
	if again := queuedNotices(t, h, false); len(again) != len(msgs) {
		t.Errorf("%d notices queued after the second import, %d before", len(again), len(msgs))
	}
	if sent := h.Rec.Messages(); len(sent) != 0 {
		t.Errorf("%d messages reached the recording relay; the daemon's relay holds everything", len(sent))
	}
}

// holdRelay takes no message: each delivery waits until the daemon stops,
// so what the daemon queued stays in the store to be read.
type holdRelay struct{}

func (holdRelay) Send(ctx context.Context, _ string, _ []string, _ []byte) error {
	<-ctx.Done()
	return ctx.Err()
}

// queuedNotices returns the import notices in the running daemon's queue,
// held there by holdRelay: with data, each row's message as the relay would
// get it; without, only its envelope.
func queuedNotices(t *testing.T, h *daemontest.Harness, data bool) []queuetest.Message {
	t.Helper()
	var out []queuetest.Message
	err := h.D.View(func(tx *bolt.Tx) error {
		rows, err := queue.List(tx)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if r.Kind != announce.KindNotice {
				continue
			}
			if !data {
				out = append(out, queuetest.Message{From: r.From, To: r.To})
				continue
			}
			full, err := queue.Get(tx, r.ID)
			if err != nil {
				return err
			}
			out = append(out, queuetest.Message{From: full.From, To: full.To, Data: append(full.Data, full.Body...)})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Google Groups exports, in the two shapes the parser knows.
const (
	googleClassicCSV = "Members for group Example Announce,,,,,,,,,,,,\r\n" +
		"Email address,Nickname,Group status,Email status,Email preference,Posting permissions,Join year,Join month,Join day,Join hour,Join minute,Join second,Time zone\r\n" +
		"gg-owner@example.org,Olga,owner,,All email,allowed,2019,3,4,10,11,12,Europe/Berlin\r\n" +
		"gg-reader@example.net,\"Reader, Rita\",member,,Digest,allowed,2020,1,2,3,4,5,America/New_York\r\n" +
		"gg-invited@example.com,,invited,,,,,,,,,,\r\n" +
		"gg-nomail@example.com,,member,,No email,allowed,2021,1,1,1,1,1,UTC\r\n" +
		"not-an-address,,member,,All email,,,,,,,,\r\n"
	googleMembersCSV = "Group name,Group email,Member name,Member email,Member role,Member type\n" +
		"Example Announce,example-announce@googlegroups.com,Ann,gg-ann@example.org,MEMBER,USER\n" +
		"Example Announce,example-announce@googlegroups.com,,gg-reader@example.net,MEMBER,USER\n" +
		"Example Announce,example-announce@googlegroups.com,,,MEMBER,CUSTOMER\n"
)

// TestSubscribersImportGoogleGroups: both CSV shapes, detected from the
// file; the group's own address is never subscribed.
func TestSubscribersImportGoogleGroups(t *testing.T) {
	h, cfg := subscribersHarness(t)
	out := mustCLI(t, "subscribers", "import", writeFile(t, "classic.csv", googleClassicCSV), "--config", cfg)
	daemontest.MustContain(t, "classic import", out, "a Google Groups member export (CSV), 7 lines, 2 addresses", "2 subscribed",
		`line 5: gg-invited@example.com has the status "invited"`, `line 6: gg-nomail@example.com chose "No email"`, `line 7: "not-an-address"`)
	out = mustCLI(t, "subscribers", "import", writeFile(t, "members.csv", googleMembersCSV), "--config", cfg)
	daemontest.MustContain(t, "members import", out, "a Google Groups member export (CSV), 4 lines, 2 addresses", "1 subscribed", "1 already subscribed", "line 4: the whole organisation")
	msgs := h.Settle(3)
	got := notices(t, msgs)
	for _, a := range []string{"gg-owner@example.org", "gg-reader@example.net", "gg-ann@example.org"} {
		if got[a] != 1 {
			t.Errorf("%s got %d notices, want 1", a, got[a])
		}
	}
	list := mustCLI(t, "subscribers", "list", "--config", cfg)
	if !regexp.MustCompile(`(?m)^gg-ann@example\.org +Ann +`).MatchString(list) || !strings.Contains(list, "Reader, Rita") {
		t.Errorf("list lacks the names:\n%s", list)
	}
	if strings.Contains(list, "googlegroups.com") {
		t.Errorf("the group's own address was subscribed:\n%s", list)
	}
}

// TestSubscribersExportRoundTrip: export writes what import reads; a second
// daemon importing it has the same set, names included.
func TestSubscribersExportRoundTrip(t *testing.T) {
	_, cfg := subscribersHarness(t)
	in := "Anne Person <anne@example.com>\nbart@example.com\n\"Person, Cris\" <cris@example.com>\n=?utf-8?b?SsO8cmdlbiBNw7xsbGVy?= <juergen@example.de>\n"
	mustCLI(t, "subscribers", "import", writeFile(t, "m.txt", in), "--config", cfg)
	mustCLI(t, "subscribers", "add", "Dora Example <Dora@Example.org>", "--config", cfg)
	exported := filepath.Join(t.TempDir(), "export.txt")
	mustCLI(t, "subscribers", "export", exported, "--config", cfg)
	fi, err := os.Stat(exported)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	first, _ := os.ReadFile(exported)
	want := "Anne Person <anne@example.com>\nbart@example.com\n\"Person, Cris\" <cris@example.com>\nDora Example <Dora@Example.org>\nJürgen Müller <juergen@example.de>\n"
	if string(first) != want {
		t.Errorf("export =\n%s\nwant\n%s", first, want)
	}
	if stdout := mustCLI(t, "subscribers", "export", "--config", cfg); stdout != want {
		t.Errorf("export to stdout =\n%s", stdout)
	}

	_, cfg2 := subscribersHarness(t)
	out := mustCLI(t, "subscribers", "import", exported, "--config", cfg2)
	daemontest.MustContain(t, "import of the export", out, "5 lines, 5 addresses", "5 subscribed")
	if strings.Contains(out, "skipped") {
		t.Errorf("import of an export skipped lines:\n%s", out)
	}
	if second := mustCLI(t, "subscribers", "export", "--config", cfg2); second != want {
		t.Errorf("round trip: second export =\n%s\nwant\n%s", second, want)
	}
}

// TestSubscribersAddRemoveOffline: add and remove one address while the
// daemon runs and while it is stopped; an address removed is not brought
// back by an import; the notice queued offline leaves at the next start.
func TestSubscribersAddRemoveOffline(t *testing.T) {
	h, cfg := subscribersHarness(t)
	daemontest.MustContain(t, "add", mustCLI(t, "subscribers", "add", "Eve <eve@example.net>", "--config", cfg),
		"eve@example.net subscribed to announce@ex.test; one signed notice sent")
	daemontest.MustContain(t, "add again", mustCLI(t, "subscribers", "add", "eve@example.net", "--config", cfg), "already subscribed; nothing sent")
	h.Settle(1)
	daemontest.MustContain(t, "remove", mustCLI(t, "subscribers", "remove", "EVE@example.net", "--config", cfg), "removed from announce@ex.test; nothing was sent")
	out := mustCLI(t, "subscribers", "import", writeFile(t, "m.txt", "eve@example.net\nfrank@example.net\n"), "--config", cfg)
	daemontest.MustContain(t, "import after remove", out, "1 subscribed", "line 1: eve@example.net left the list on", "`embargo subscribers add eve@example.net`")
	h.Settle(2) // frank's notice; nothing to eve
	var o, e strings.Builder
	if code := runIO([]string{"subscribers", "import", "-", "--config", cfg}, strings.NewReader("Harry <harry@example.net>\n"), &o, &e); code != 0 || !strings.Contains(o.String(), "-: a Mailman members listing, 1 line, 1 address.") {
		t.Errorf("import from stdin: exit %d\n%s%s", code, o.String(), e.String())
	}
	h.Settle(3)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"subscribers", "remove", "nobody@example.net"}, 1, "is not on the list"},
		{[]string{"subscribers", "add", "not an address"}, 1, "is not a plain address"},
		{[]string{"subscribers", "add", "announce@ex.test"}, 1, "an address of this server"},
		{[]string{"subscribers", "add"}, 2, "usage: embargo subscribers add ADDRESS"},
		{[]string{"subscribers", "import", "/nonexistent/file"}, 1, "no such file"},
		{[]string{"subscribers", "import", writeFile(t, "g.csv", "Group name,Group email\nx,x@googlegroups.com\n")}, 1, "list of groups"},
		{[]string{"subscribers", "count", "extra"}, 2, "takes no arguments"},
		{[]string{"subscribers", "purge"}, 2, "unknown subscribers subcommand"},
	} {
		code, _, errOut := runCLI(t, append(tc.args, "--config", cfg)...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("embargo %s: exit %d, %q; want %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.want)
		}
	}

	h.Stop()
	daemontest.MustContain(t, "offline add", mustCLI(t, "subscribers", "add", "grace@example.net", "--config", cfg),
		"one signed notice queued: the daemon sends it when it starts")
	daemontest.MustContain(t, "offline remove", mustCLI(t, "subscribers", "remove", "frank@example.net", "--config", cfg), "removed")
	daemontest.MustContain(t, "offline count", mustCLI(t, "subscribers", "count", "--all", "--config", cfg), "active    2\npending   0\ndisabled  0\n")
	if list := mustCLI(t, "subscribers", "list", "--all", "--config", cfg); !strings.Contains(list, "grace@example.net") || strings.Contains(list, "frank@") {
		t.Errorf("offline list:\n%s", list)
	}
	h.Start()
	msgs := h.WaitMail(4)
	if !slices.Contains(msgs[3].To, "grace@example.net") {
		t.Errorf("the notice queued offline was not sent at start: %v", msgs[3].To)
	}
}
