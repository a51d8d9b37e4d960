package daemon_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
	"github.com/embargo-project/embargo/workflow"
)

// The client corpus (testdata/clients, its README says where each message
// comes from): real mail clients' messages through SMTP into the real
// daemon, each checked for the incident change and the receipt.

var updateClients = flag.Bool("update-clients", false, "rewrite testdata/clients from the clients run in TestClientsLive")

const corpusDir = "testdata/clients"

// clientCase is one client and layout, and what the daemon must make of it.
type clientCase struct {
	name    string // the corpus file is testdata/clients/<name>.eml
	client  string // the client, as the table names it
	layout  string
	outcome string // "applied", "refused" (one receipt says why) or "ignored" (no receipt)
	reason  string // refused: what the receipt says
	credit  string // applied: the /set credit value the message sets
	// build makes the message as the client sends it, or drives the client
	// itself (mutt); nil with neomutt's smtp_url: the daemon got it already.
	build func(w *clientWorld, t *testing.T) []byte
	live  bool // only made live (a real client), never stored
}

// manifest is testdata/clients/manifest.json: the corpus in the order it
// is replayed, and when it was made.
type manifest struct {
	Made time.Time `json:"made"` // the daemon's clock replays from here
	// The Message-ID of the copy the messages reply to, and the thread
	// anchor it references: the replay files them under its incident.
	CopyID  string          `json:"copy_id"`
	Root    string          `json:"root"`
	Entries []manifestEntry `json:"entries"`
}

type manifestEntry struct {
	Name    string `json:"name"`
	Client  string `json:"client"`
	Layout  string `json:"layout"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	Credit  string `json:"credit,omitempty"`
}

// clientWorld is a daemon with a committee (alice and bob, pinned keys), a
// report, and alice's copy of it: what members reply to.
type clientWorld struct {
	h                  *daemontest.Harness
	alice              *daemontest.GPG
	afpr, bfpr, secFpr string
	id                 string
	copy               queuetest.Message // alice's copy of the report
	copyID, root       string            // its Message-ID and the thread anchor it references
	seen               int
}

// corpusKeys are the committee's keys and the security list key the
// corpus was made with (test keys: never use them for anything else).
func corpusKey(name string) string { return filepath.Join(corpusDir, "keys", name) }

// newClientWorld starts the daemon with the corpus keys (made first when
// updating), on clk (nil: the wall clock).
func newClientWorld(t *testing.T, clk *daemontest.Clock) *clientWorld {
	t.Helper()
	w := &clientWorld{alice: daemontest.NewGPG(t)}
	if _, err := os.Stat(corpusKey("alice.sec.asc")); err != nil {
		if !*updateClients {
			t.Fatalf("no corpus keys (%v): run go test -run TestClientsLive -update-clients ./cmd/embargo/daemon", err)
		}
		makeCorpusKeys(t)
	}
	w.alice.Must(daemontest.ReadFile(t, corpusKey("alice.sec.asc")), "--import")
	w.afpr = w.alice.Fingerprint("alice@ex.test")
	// Alice's own key is hers: ultimately trusted, as after gpg --gen-key.
	w.alice.Must([]byte(w.afpr+":6:\n"), "--trust-model", "pgp", "--import-ownertrust")
	bob := daemontest.NewGPG(t)
	bob.Must(daemontest.ReadFile(t, corpusKey("bob.asc")), "--import")
	w.bfpr = bob.Fingerprint("bob@ex.test")
	kd := daemontest.KeysDir(t, map[string][]byte{"alice": w.alice.Export(w.afpr), "bob": daemontest.ReadFile(t, corpusKey("bob.asc"))})
	members := daemontest.TOMLMember("alice@ex.test", w.afpr) + daemontest.TOMLMember("bob@ex.test", w.bfpr)
	var o daemon.Options
	if clk != nil {
		o = clk.Options(o)
	}
	w.h = daemontest.New(t, daemontest.Config{Top: fmt.Sprintf("keys_dir = %q\n", kd), Members: members}, o)
	// The security list key of the corpus, in place of the one the first
	// start made.
	w.h.Stop()
	if sec, err := os.ReadFile(corpusKey("security.key.asc")); err == nil {
		daemontest.WriteFile(t, w.h.Config().ListKeyPath("security"), string(sec))
	} else if !*updateClients {
		t.Fatal(err)
	}
	w.h.Start()
	w.alice.ImportKey(exportListKey(t, w.h, "security"))
	w.secFpr = w.alice.Fingerprint("security@ex.test")
	// A member certifies the list key once (a local signature): mutt and
	// GPGME then take it as valid for security@ without asking.
	w.alice.Must(nil, "--quick-lsign-key", w.secFpr)

	w.h.MustSend("rep@out.test", []string{"security@ex.test"}, daemontest.Report("rep@out.test", "heap overflow", "Steps to reproduce: a crafted input."))
	msgs := w.next(t, 3) // the acknowledgement, alice's copy, bob's
	w.id = idRE.FindString(string(daemontest.To(msgs, "rep@out.test")[0].Data))
	w.copy = daemontest.To(msgs, "alice@ex.test")[0]
	hd := daemontest.Header(t, w.copy)
	w.copyID = strings.Trim(hd.Get("Message-Id"), "<>")
	w.root = strings.Trim(hd.Get("In-Reply-To"), "<>")
	if w.id == "" || w.copyID == "" || w.root == "" {
		t.Fatalf("no incident ID, copy Message-ID or thread anchor: %q %q %q", w.id, w.copyID, w.root)
	}
	return w
}

func makeCorpusKeys(t *testing.T) {
	t.Helper()
	os.MkdirAll(filepath.Join(corpusDir, "keys"), 0o755)
	for _, who := range []string{"Alice <alice@ex.test>", "Bob <bob@ex.test>"} {
		g := daemontest.NewGPG(t)
		g.Must(nil, "--quick-gen-key", who, "ed25519", "sign,cert", "never")
		fpr := g.Fingerprint(who)
		g.Must(nil, "--quick-add-key", fpr, "cv25519", "encr", "never")
		if strings.HasPrefix(who, "Alice") {
			daemontest.WriteFile(t, corpusKey("alice.sec.asc"), string(g.Must(nil, "--armor", "--export-secret-keys", fpr)))
		} else {
			daemontest.WriteFile(t, corpusKey("bob.asc"), string(g.Export(fpr)))
		}
	}
}

func (w *clientWorld) next(t *testing.T, n int) []queuetest.Message {
	t.Helper()
	all := w.h.Settle(w.seen + n)
	out := all[w.seen:]
	w.seen = len(all)
	return out
}

func (w *clientWorld) incident(t *testing.T) workflow.Incident {
	t.Helper()
	var inc workflow.Incident
	w.h.D.View(func(tx *bolt.Tx) error {
		p, err := incidentdb.Get(tx, workflow.ID(w.id))
		if err != nil {
			t.Fatal(err)
		}
		inc = *p
		return nil
	})
	return inc
}

// lastRaw is the last message the incident archived, as received.
func (w *clientWorld) lastRaw(t *testing.T) []byte {
	t.Helper()
	var raw []byte
	w.h.D.View(func(tx *bolt.Tx) error {
		recs, err := incidentdb.Messages(tx, workflow.ID(w.id))
		if err != nil || len(recs) == 0 {
			t.Fatalf("no archived message: %v", err)
		}
		raw, err = incidentdb.Raw(tx, recs[len(recs)-1].Seq)
		return err
	})
	return raw
}

// receipts decrypts the receipts among msgs sent to alice.
func (w *clientWorld) receipts(t *testing.T, msgs []queuetest.Message) []string {
	t.Helper()
	var out []string
	for _, m := range daemontest.To(msgs, "alice@ex.test") {
		plain, _ := w.alice.DecryptMIME(m.Data)
		if regexp.MustCompile(`(?m)^Subject: \[[^]]+\] receipt:`).Match(plain) {
			out = append(out, daemontest.MIMEText(plain))
		}
	}
	return out
}

// check sends nothing: it reads what the daemon made of the case's message
// (already sent) and says what happened, or fails the test.
func (w *clientWorld) check(t *testing.T, c clientCase, before workflow.Incident) string {
	t.Helper()
	n := 1 // bob's copy of alice's message
	if c.outcome != "ignored" {
		n++
	}
	msgs := w.next(t, n)
	if len(daemontest.To(msgs, "bob@ex.test")) != 1 {
		t.Errorf("%s: bob got %d copies, want 1", c.name, len(daemontest.To(msgs, "bob@ex.test")))
	}
	rs := w.receipts(t, msgs)
	inc := w.incident(t)
	switch c.outcome {
	case "applied":
		if len(rs) != 1 || !strings.Contains(rs[0], "The command was applied.") || inc.Advisory.Credit != c.credit {
			t.Errorf("%s: not applied: credit %q, want %q; receipts:\n%s", c.name, inc.Advisory.Credit, c.credit, strings.Join(rs, "\n----\n"))
		}
	case "refused":
		if len(rs) != 1 || !strings.Contains(rs[0], "othing was applied") || !strings.Contains(unwrapped(rs[0]), c.reason) {
			t.Errorf("%s: want one receipt refusing with %q, got:\n%s", c.name, c.reason, strings.Join(rs, "\n----\n"))
		}
	case "ignored":
		if len(rs) != 0 {
			t.Errorf("%s: want no receipt, got:\n%s", c.name, strings.Join(rs, "\n----\n"))
		}
	}
	if c.outcome != "applied" && inc.Advisory.Credit != before.Advisory.Credit {
		t.Errorf("%s: the incident changed: credit %q", c.name, inc.Advisory.Credit)
	}
	return c.outcome
}

// allCases are the clients run live, then the layouts built to the
// clients' formats.
func allCases() []clientCase { return append(muttCases(), layoutCases()...) }

// TestClientsLive runs mutt and neomutt as a member would, replying to
// their copy, and sends the layouts of the other clients, through SMTP
// into the daemon. With -update-clients it rewrites the corpus.
func TestClientsLive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs mail clients in a terminal")
	}
	w := newClientWorld(t, nil)
	// The path the copy describes is the one a client takes: its Reply-To,
	// outside the encryption and inside it, is the list address, whose key
	// the member's client finds by its user ID.
	hd := daemontest.Header(t, w.copy)
	if rt := hd.Get("Reply-To"); !strings.Contains(rt, "<security@ex.test>") && rt != "security@ex.test" {
		t.Errorf("the copy's outer Reply-To is %q, want security@ex.test", rt)
	}
	inner, _ := w.alice.DecryptMIME(w.copy.Data)
	if rt := regexp.MustCompile(`(?m)^Reply-To: (.*)\r?$`).FindSubmatch(inner); rt == nil || !strings.Contains(string(rt[1]), "<security@ex.test>") {
		t.Errorf("the copy's protected Reply-To is %q, want security@ex.test", rt)
	}
	daemontest.MustContain(t, "the copy", daemontest.MIMEText(inner), "encrypt it too, to security@ex.test", "finds the", w.secFpr, "filed under "+w.id)
	var entries []manifestEntry
	var saved = map[string][]byte{}
	for _, c := range allCases() {
		t.Run(c.name, func(t *testing.T) {
			defer w.h.On(t)()
			before := w.incident(t)
			raw := c.build(w, t)
			if raw != nil {
				raw = []byte(daemontest.CRLF(string(raw)))
				if err := daemontest.SendSMTP(w.h.Addr(), "alice@ex.test", []string{"security@ex.test"}, raw); err != nil {
					t.Fatalf("send: %v", err)
				}
			}
			if c.outcome == "" { // the client stopped: nothing was sent
				return
			}
			w.check(t, c, before)
			if raw == nil {
				raw = w.lastRaw(t)
			}
			if !c.live {
				saved[c.name] = raw
				entries = append(entries, manifestEntry{c.name, c.client, c.layout, c.outcome, c.reason, c.credit})
			}
		})
	}
	if *updateClients && !t.Failed() {
		writeCorpus(t, w, entries, saved)
	}
}

func writeCorpus(t *testing.T, w *clientWorld, entries []manifestEntry, saved map[string][]byte) {
	t.Helper()
	for name, raw := range saved {
		daemontest.WriteFile(t, filepath.Join(corpusDir, name+".eml"), string(raw))
	}
	daemontest.WriteFile(t, corpusKey("security.key.asc"), string(daemontest.ReadFile(t, w.h.Config().ListKeyPath("security"))))
	b, _ := json.MarshalIndent(manifest{Made: time.Now().UTC().Truncate(time.Second), CopyID: w.copyID, Root: w.root, Entries: entries}, "", "  ")
	daemontest.WriteFile(t, filepath.Join(corpusDir, "manifest.json"), string(b)+"\n")
	readme := daemontest.ReadFile(t, filepath.Join(corpusDir, "README.md"))
	daemontest.WriteFile(t, filepath.Join(corpusDir, "README.md"), withTable(string(readme), clientTable(allCases())))
}

// TestClientCorpus replays the stored corpus through SMTP into the daemon,
// on the clock it was made at (its signatures are then fresh), and checks
// each message's outcome, and that the README's table says the same.
func TestClientCorpus(t *testing.T) {
	var m manifest
	if err := json.Unmarshal(daemontest.ReadFile(t, filepath.Join(corpusDir, "manifest.json")), &m); err != nil {
		t.Fatal(err)
	}
	w := newClientWorld(t, daemontest.RunningClock(m.Made))
	// The copy the corpus replies to was made by an earlier daemon: file its
	// Message-ID and the thread anchor under this incident, as that
	// daemon did.
	if err := daemon.DB(w.h.D).Update(func(tx *bolt.Tx) error {
		if err := incidentdb.IndexMessageID(tx, m.CopyID, workflow.ID(w.id)); err != nil {
			return err
		}
		return incidentdb.IndexMessageID(tx, m.Root, workflow.ID(w.id))
	}); err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Entries {
		c := clientCase{name: e.Name, client: e.Client, layout: e.Layout, outcome: e.Outcome, reason: e.Reason, credit: e.Credit}
		t.Run(e.Name, func(t *testing.T) {
			defer w.h.On(t)()
			before := w.incident(t)
			raw := daemontest.ReadFile(t, filepath.Join(corpusDir, e.Name+".eml"))
			if err := daemontest.SendSMTP(w.h.Addr(), "alice@ex.test", []string{"security@ex.test"}, raw); err != nil {
				t.Fatalf("send: %v", err)
			}
			w.check(t, c, before)
		})
	}
	readme := string(daemontest.ReadFile(t, filepath.Join(corpusDir, "README.md")))
	if want := withTable(readme, clientTable(allCases())); readme != want {
		t.Errorf("testdata/clients/README.md's table is not the cases' (go test -run TestClientsLive -update-clients):\n%s", clientTable(allCases()))
	}
}

const tableStart, tableEnd = "<!-- table: made by TestClientsLive -update-clients -->\n", "<!-- end of table -->\n"

// clientTable is the closing note's table: client × layout → outcome.
func clientTable(cases []clientCase) string {
	var b strings.Builder
	b.WriteString("| client | layout | outcome |\n|---|---|---|\n")
	for _, c := range cases {
		out := c.outcome
		switch c.outcome {
		case "refused":
			out = "refused, one receipt: " + c.reason
		case "ignored":
			out = "ignored (no commands outside the quote): no receipt"
		case "":
			out = c.reason
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", c.client, c.layout, out)
	}
	return b.String()
}

func withTable(readme, table string) string {
	i, j := strings.Index(readme, tableStart), strings.Index(readme, tableEnd)
	if i < 0 || j < i {
		return readme + "\n" + tableStart + table + tableEnd
	}
	return readme[:i+len(tableStart)] + table + readme[j:]
}
