package listd

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/govdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/incidentdb"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
	"github.com/embargo-project/embargo/keys"
	"github.com/embargo-project/embargo/lists"
	"github.com/embargo-project/embargo/lists/message"
	"github.com/embargo-project/embargo/templates"
	"github.com/embargo-project/embargo/workflow"
)

// storeKeys are the keys of a storeService world, made once per test
// binary: the security and distributors list keys, alice and bob (SRC) and
// a distributor, each with its secret key so that a test can sign as them
// and read what they receive.
type storeKeys struct {
	list, dists, alice, bob, dist, applicant *keys.Key
}

var ko = keys.Options{Now: func() time.Time { return mon.Add(-time.Hour) }}

func newStoreKeys(t testing.TB) *storeKeys {
	t.Helper()
	gen := func(name, addr string) *keys.Key {
		k, err := keys.GenerateListKey(name, addr, ko)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	return &storeKeys{
		list: gen("security", "security@ex.test"), dists: gen("distributors", "distributors@ex.test"),
		alice: gen("Alice", "alice@ex.test"), bob: gen("Bob", "bob@ex.test"), dist: gen("Dist", "dist@vendor.test"),
		applicant: gen("New Distro", "security@newdistro.test"),
	}
}

// storeService is a Service on a fresh store, with the three lists.
func storeService(t testing.TB, k *storeKeys, opts ...func(*Options)) (*Service, *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, &bolt.Options{Timeout: time.Second, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := incidentdb.Init(tx); err != nil {
			return err
		}
		return queue.Init(tx)
	}); err != nil {
		t.Fatal(err)
	}
	tmpl, err := templates.New("")
	if err != nil {
		t.Fatal(err)
	}
	roster := &lists.Roster{
		Lists: []lists.List{
			{Name: lists.Security, Address: "security@ex.test", Encryption: "optional", OuterSubject: "Encrypted message"},
			{Name: lists.Distributors, Address: "distributors@ex.test", Encryption: "required", OuterSubject: "Encrypted message"},
			{Name: lists.Announce, Address: "announce@ex.test", Encryption: "optional", OuterSubject: "Encrypted message"},
		},
		Members: []lists.Member{
			{Email: "alice@ex.test", Name: "Alice", Roles: []string{"src"}, Fingerprint: k.alice.Fingerprint()},
			{Email: "bob@ex.test", Name: "Bob", Roles: []string{"src"}, Fingerprint: k.bob.Fingerprint()},
			{Email: "dist@vendor.test", Roles: []string{"distributor"}, Fingerprint: k.dist.Fingerprint()},
		},
		Governance: true,
	}
	o := Options{DB: db, Roster: roster, Templates: tmpl, Project: "ex.test", ListKey: k.list, DistributorsKey: k.dists,
		Members: keys.NewKeyring(k.alice, k.bob, k.dist), Now: func() time.Time { return mon },
		Rotation: workflow.Rotation{Members: []string{"alice@ex.test", "bob@ex.test"}}, Quorum: 2}
	for _, f := range opts {
		f(&o) // before New: the Service takes its snapshot of the Options there
	}
	return New(o), db
}

// outer is a message header for the in-process messages.
func outerHeader(from, to, subject, msgid string) mail.Header {
	var h mail.Header
	h.SetAddressList("From", []*mail.Address{{Address: from}})
	h.SetAddressList("To", []*mail.Address{{Address: to}})
	h.SetSubject(subject)
	h.SetMessageID(msgid)
	h.SetDate(mon.Add(-time.Minute))
	return h
}

const textEntity = "Content-Type: text/plain; charset=utf-8\r\n\r\n"

func plainMail(from, to, subject, msgid, text string) []byte {
	return []byte(fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s>\r\nDate: Mon, 23 Nov 2026 08:59:00 +0000\r\n%s%s",
		from, to, subject, msgid, textEntity, strings.ReplaceAll(text, "\n", "\r\n")))
}

// step is one message through the store.
type step struct {
	name     string
	from, to string
	raw      []byte
}

// storeSteps are messages that take every path of store: a new report, an
// encrypted report, the same ciphertext resubmitted by someone else (D3),
// signed commands in the thread, an unsigned command from a member, a
// distributor post, a bounce and the same bytes again.
func storeSteps(t testing.TB, k *storeKeys) []step {
	t.Helper()
	sko := keys.Options{Now: func() time.Time { return mon.Add(-time.Minute) }}
	enc, err := keys.Encrypt(outerHeader("rep2@out.test", "security@ex.test", "...", "enc1@out.test"),
		[]byte(textEntity+"CANARY encrypted report\r\n"), k.list, nil, sko)
	if err != nil {
		t.Fatal(err)
	}
	resub := bytes.Replace(enc, []byte("rep2@out.test"), []byte("mallory@evil.test"), 1)
	resub = bytes.Replace(resub, []byte("enc1@out.test"), []byte("enc2@evil.test"), 1)
	signed, err := keys.Sign(outerHeader("alice@ex.test", "security+SEC-2026-0001@ex.test", "Re: [SEC-2026-0001]", "cmd1@ex.test"),
		[]byte(textEntity+"/accept\r\n/lead me\r\n\r\nTaking it.\r\n"), k.alice, sko)
	if err != nil {
		t.Fatal(err)
	}
	post, err := keys.Encrypt(outerHeader("alice@ex.test", "distributors@ex.test", "...", "post1@ex.test"),
		[]byte("Subject: heads-up\r\n"+textEntity+"A notice is coming.\r\n"), k.dists, k.alice, sko)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, err := keys.Encrypt(outerHeader("alice@ex.test", "distributors@ex.test", "...", "post3@ex.test"),
		[]byte(textEntity+"to the wrong key\r\n"), k.list, k.alice, sko)
	if err != nil {
		t.Fatal(err)
	}
	var outsider mail.Header
	outsider.SetAddressList("From", []*mail.Address{{Address: "alice@ex.test"}})
	outsider.SetAddressList("To", []*mail.Address{{Address: "distributors@ex.test"}})
	outsider.SetAddressList("Cc", []*mail.Address{{Address: "press@news.test"}})
	outsider.SetMessageID("post4@ex.test")
	wrongKeyOutsider, err := keys.Encrypt(outsider, []byte(textEntity+"to the wrong key\r\n"), k.list, k.alice, sko)
	if err != nil {
		t.Fatal(err)
	}
	report := plainMail("rep@out.test", "security@ex.test", "heap overflow", "r1@out.test", "Steps to reproduce.\n")
	pub, err := k.applicant.ArmoredPublic()
	if err != nil {
		t.Fatal(err)
	}
	app := []byte(strings.ReplaceAll("From: person@newdistro.test\nTo: distributors+apply@ex.test\nSubject: application\nMessage-ID: <app1@newdistro.test>\n"+
		"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"+
		"Alias: security@newdistro.test\nProduct: New Distro\nMaintained: yes\nUsers: many\nRecord: https://newdistro.test/sec\n"+
		"Not-A-Rebuild: own\nCommunity: yes\nEmbargo: accepted\nContributes: reviews\n"+
		"\n--b\nContent-Type: application/pgp-keys\n\n"+string(pub)+"\n--b--\n", "\n", "\r\n"))
	admit := func(key *keys.Key, from, msgid string) []byte {
		m, err := keys.Sign(outerHeader(from, "security+GOV-2026-0001@ex.test", "Re: [GOV-2026-0001]", msgid), []byte(textEntity+"/admit\r\n"), key, sko)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	list, err := keys.Sign(outerHeader("alice@ex.test", "security@ex.test", "roster", "list1@ex.test"), []byte(textEntity+"/member list\r\n"), k.alice, sko)
	if err != nil {
		t.Fatal(err)
	}
	return []step{
		{"report", "rep@out.test", "security@ex.test", report},
		{"encrypted report", "rep2@out.test", "security@ex.test", enc},
		{"resubmitted ciphertext", "mallory@evil.test", "security@ex.test", resub},
		{"signed commands", "alice@ex.test", "security+SEC-2026-0001@ex.test", signed},
		{"unsigned command", "bob@ex.test", "security+SEC-2026-0001@ex.test",
			plainMail("bob@ex.test", "security+SEC-2026-0001@ex.test", "Re: x", "u1@ex.test", "/severity high\n")},
		{"distributor post", "alice@ex.test", "distributors@ex.test", post},
		{"plaintext distributor post", "alice@ex.test", "distributors@ex.test",
			plainMail("alice@ex.test", "distributors@ex.test", "x", "p2@ex.test", "hello\n")},
		// Opened before the transaction, refused in it: after the check of
		// the recipients, which alerts the SRC (G1).
		{"distributor post encrypted to the wrong key", "alice@ex.test", "distributors@ex.test", wrongKey},
		{"distributor post to the wrong key naming an outsider", "alice@ex.test", "distributors@ex.test", wrongKeyOutsider},
		{"bounce", "", "security+bounces@ex.test", plainMail("mailer-daemon@out.test", "security+bounces@ex.test", "failure", "b1@out.test", "gone\n")},
		{"the same bytes again", "rep@out.test", "security@ex.test", report},
		// Governance (governance.go): an application, two /admit in its
		// thread (the second admits), a roster command to security@ alone.
		{"distributor application", "person@newdistro.test", "distributors+apply@ex.test", app},
		{"first /admit", "alice@ex.test", "security+GOV-2026-0001@ex.test", admit(k.alice, "alice@ex.test", "adm1@ex.test")},
		{"second /admit", "bob@ex.test", "security+GOV-2026-0001@ex.test", admit(k.bob, "bob@ex.test", "adm2@ex.test")},
		{"/member list", "alice@ex.test", "security@ex.test", list},
	}
}

var errRollback = errors.New("roll back")

// TestStoreTwice: the transaction of each message may run twice (bbolt's
// Batch runs a closure again, alone, after a failed batch: the first run's
// transaction is rolled back). A store where each transaction ran, was
// rolled back and ran again holds what a store where each ran once holds.
func TestStoreTwice(t *testing.T) {
	k := newStoreKeys(t)
	once, onceDB := storeService(t, k)
	twice, twiceDB := storeService(t, k)
	refusals := map[string]error{}
	for _, st := range storeSteps(t, k) {
		env := Envelope{From: st.from, To: []string{st.to}}
		d1, err := once.openOnce(env, st.raw, sha256.Sum256(st.raw))
		if err != nil {
			t.Fatalf("%s: open: %v", st.name, err)
		}
		var o1, o2, o3 outcome
		if err := onceDB.Update(func(tx *bolt.Tx) error { o1, err = once.store(tx, d1); return err }); err != nil {
			t.Fatalf("%s: store: %v", st.name, err)
		}
		d2, err := twice.openOnce(env, st.raw, sha256.Sum256(st.raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := twiceDB.Update(func(tx *bolt.Tx) error {
			if o2, err = twice.store(tx, d2); err != nil {
				return err
			}
			return errRollback
		}); !errors.Is(err, errRollback) {
			t.Fatalf("%s: first run: %v", st.name, err)
		}
		if err := twiceDB.Update(func(tx *bolt.Tx) error { o3, err = twice.store(tx, d2); return err }); err != nil {
			t.Fatalf("%s: second run: %v", st.name, err)
		}
		refusals[st.name] = o3.refusal
		if o1.result != o2.result || o2.result != o3.result || o1.incID != o3.incID || fmt.Sprint(o1.refusal) != fmt.Sprint(o3.refusal) {
			t.Errorf("%s: outcomes %+v, %+v, %+v", st.name, o1, o2, o3)
		}
		a, b := snapshot(t, onceDB, k), snapshot(t, twiceDB, k)
		if a != b {
			t.Fatalf("%s: the store after a rerun differs from the store after one run:\n--- once\n%s\n--- twice\n%s", st.name, a, b)
		}
	}
	// The distributor posts that could not be opened were refused, each
	// with its reason: the cryptographic one, or the outside recipient.
	for name, enhanced := range map[string]string{"distributor post encrypted to the wrong key": "5.7.5",
		"distributor post to the wrong key naming an outsider": "5.7.1"} {
		var r *lists.Refusal
		if !errors.As(refusals[name], &r) || r.Enhanced != enhanced {
			t.Errorf("%s: refusal %v, want %s", name, refusals[name], enhanced)
		}
	}
	// The D3 note was made once, in the copies alone, above the text.
	snap := snapshot(t, twiceDB, k)
	for _, want := range []string{`"status":"passed"`, "Welcome to the ex.test distributors list", "has received the application",
		"Roster as of", "alice@ex.test, bob@ex.test"} {
		if !strings.Contains(snap, want) {
			t.Errorf("the governance steps did not leave %q:\n%s", want, snap)
		}
	}
	if n := strings.Count(snap, "it came again from mallory@evil.test"); n != 2 { // alice's copy and bob's
		t.Errorf("the resubmission note appears %d times, want once in each of 2 copies:\n%s", n, snap)
	}
	if !strings.Contains(snap, "(a possible decryption-oracle attempt).\n\nIt arrived encrypted to the list key.\n\nCANARY encrypted report\n") {
		t.Errorf("the note does not stand above the untouched text:\n%s", snap)
	}
}

// snapshot renders what a store holds, without what is random by design
// (Message-IDs, thread anchors, ciphertexts): the incidents, each queued
// row with the decrypted text of its content, the archive and its notes,
// the ciphertexts seen, and the metadata.
func snapshot(t testing.TB, db *bolt.DB, k *storeKeys) string {
	t.Helper()
	byAddr := map[string]*keys.Key{"alice@ex.test": k.alice, "bob@ex.test": k.bob, "dist@vendor.test": k.dist,
		"person@newdistro.test": k.applicant, "security@newdistro.test": k.applicant}
	var b strings.Builder
	err := db.View(func(tx *bolt.Tx) error {
		incs, err := incidentdb.List(tx)
		if err != nil {
			return err
		}
		for _, inc := range incs {
			inc.RootMsg = ""
			for i := range inc.History {
				inc.History[i].MessageID = ""
			}
			j, _ := json.Marshal(inc)
			fmt.Fprintf(&b, "incident %s\n", j)
			recs, err := incidentdb.Messages(tx, inc.ID)
			if err != nil {
				return err
			}
			for _, r := range recs {
				fmt.Fprintf(&b, "  message from %s note %q\n", r.Sender, r.Note)
			}
		}
		rows, err := queue.List(tx)
		if err != nil {
			return err
		}
		var lines []string
		for _, r := range rows {
			if r, err = queue.Get(tx, r.ID); err != nil {
				return err
			}
			var text string
			switch {
			case len(r.Body) > 0:
				// A copy sealed at delivery: the shared body, and the seal.
				text = fmt.Sprintf("(to seal, %d-byte header) %s", len(r.Data), bodyText(t, rowEntity(t, r)))
			case len(r.Data) > 0:
				text = "(plain) " + bodyText(t, r.Data)
				if key := byAddr[strings.Join(r.To, ",")]; key != nil && bytes.Contains(r.Data, []byte("multipart/encrypted")) {
					text = "(sealed) " + decryptText(t, r.Data, key)
				}
			}
			lines = append(lines, fmt.Sprintf("row %s to %v from %s incident %s:\n%s", r.Kind, r.To, verpFrom(t, tx, r), r.Incident, text))
		}
		slices.Sort(lines) // rows of one message are queued in one order; across runs the sequence numbers differ
		b.WriteString(strings.Join(lines, "\n"))
		for _, name := range []string{"last_lead"} {
			fmt.Fprintf(&b, "meta %s=%q\n", name, incidentdb.Meta(tx, name))
		}
		st, err := govdb.Load(tx)
		if err != nil {
			return err
		}
		for i := range st.Proposals {
			st.Proposals[i].RootMsg = ""
		}
		j, _ := json.Marshal(st)
		fmt.Fprintf(&b, "governance %s\n", j)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// rowEntity is the entity a row's body stands for: the body, or the
// entity the Sealer writes from a composed spec's text (composed.go).
func rowEntity(t testing.TB, r queue.Row) []byte {
	if r.Seal == nil || len(r.Seal.Compose) == 0 {
		return r.Body
	}
	c, om, _, err := readComposed(r.Seal.Compose)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Text {
		return r.Body
	}
	om.Body = string(r.Body)
	ent, err := om.entity()
	if err != nil {
		t.Fatal(err)
	}
	return ent
}

func bodyText(t testing.TB, data []byte) string {
	m, err := message.Parse(data, message.Limits{})
	if err != nil {
		t.Fatalf("outbound message does not parse: %v", err)
	}
	return m.Text
}

func decryptText(t testing.TB, data []byte, key *keys.Key) string {
	t.Helper()
	dec, err := keys.Decrypt(data, key, nil, keys.Options{Now: func() time.Time { return mon }})
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	m, err := message.Parse(dec.Inner, message.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return "Subject: " + m.Subject + "\n" + m.Text
}

// TestSignatureProblems: every way a signature can fail to count has its
// own reason and its own way to fix it.
func TestSignatureProblems(t *testing.T) {
	mem := lists.Member{Email: "alice@ex.test", Fingerprint: "0123456789ABCDEF0123456789ABCDEF01234567"}
	whys, fixes := map[string]bool{}, map[string]bool{}
	for st := keys.SigNone; st <= keys.SigUnreadable; st++ {
		if st == keys.SigGood {
			continue
		}
		why, fix := signatureProblem(keys.Verdict{Status: st, Err: fmt.Errorf("%w: detail-%d", keys.ErrMalformed, st)}, mem)
		if why == "" || fix == "" || whys[why] || fixes[fix] {
			t.Errorf("%v: reason %q, fix %q: empty or shared with another status", st, why, fix)
		}
		whys[why], fixes[fix] = true, true
		if st != keys.SigNone && st != keys.SigForwarded && !strings.Contains(why, fmt.Sprintf("detail-%d", st)) {
			t.Errorf("%v: reason %q lacks the verdict's detail", st, why)
		}
	}
	why, _ := signatureProblem(keys.Verdict{Status: keys.SigUnknownKey, Err: fmt.Errorf("%w: ABCDEF0123456789", keys.ErrUnknownSigner)}, mem)
	if !strings.Contains(why, "not the one pinned for you") || !strings.Contains(why, "ABCDEF0123456789") || !strings.Contains(why, mem.Fingerprint) {
		t.Errorf("unknown key: %q", why)
	}
}

// TestOpensOnce: listd reads a message through lists/inbound alone. None
// of its files parses, decrypts or verifies raw bytes itself, but for two
// exceptions, one call each: a distributor application's signature is
// checked a second time against the key it carries, which no one trusted
// when the message was opened (governance.go attachedKeys); and whether a
// new reporter key comes signed by the key pinned before is known only
// inside the transaction, where the incident is (reporterkey.go signedBy).
func TestOpensOnce(t *testing.T) {
	forbidden := []string{"message.Parse(", "message.ParseHeader(", "keys.Decrypt(", "keys.Verify(", "keys.Open(", "keys.IsEncrypted(", "inbound.Open("}
	files, _ := filepath.Glob("*.go")
	opens := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, call := range forbidden {
			n := strings.Count(string(src), call)
			if call == "inbound.Open(" {
				opens += n
				continue
			}
			if (f == "governance.go" || f == "reporterkey.go") && call == "keys.Open(" && n == 1 {
				continue
			}
			if n > 0 {
				t.Errorf("%s calls %s: open the message once, in Service.openOnce", f, strings.TrimSuffix(call, "("))
			}
		}
	}
	if opens != 1 {
		t.Errorf("inbound.Open is called %d times in listd, want once (Service.openOnce)", opens)
	}
}

func TestWrap(t *testing.T) {
	got := wrap("the key pinned for alice@ex.test is 0123456789ABCDEF0123456789ABCDEF01234567, and   nothing else", 40)
	want := "the key pinned for alice@ex.test is\n0123456789ABCDEF0123456789ABCDEF01234567,\nand nothing else"
	if got != want {
		t.Errorf("wrap = %q, want %q", got, want)
	}
}

// verpFrom is a row's envelope sender for snapshot: a per-copy bounce
// address (verp.go), whose token differs from store to store (the MAC key
// is random), reads as the copy it names, which must be the row's.
func verpFrom(t testing.TB, tx *bolt.Tx, r queue.Row) string {
	local, domain, _ := strings.Cut(r.From, "@")
	base, detail, _ := strings.Cut(local, "+")
	if !lists.IsVERP(detail) {
		return r.From
	}
	rec, ok := lookupVERP(tx, lists.Name(base), detail)
	if !ok || len(r.To) != 1 || rec.To != r.To[0] || rec.Kind != r.Kind || rec.Incident != r.Incident || rec.NoAlert != r.NoAlert {
		t.Errorf("row %d from %s: the address names %+v (found %v)", r.ID, r.From, rec, ok)
	}
	return base + "+bounces-(" + r.Kind + " to " + rec.To + ")@" + domain
}
