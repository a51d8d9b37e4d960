package daemon_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// dkimLookup answers the DNS query of a verifier with the daemon's DKIM
// public key, as `embargo check` prints it.
func dkimLookup(t *testing.T, h *daemontest.Harness) func(string) ([]string, error) {
	t.Helper()
	k, _, err := daemon.LoadDKIMKey(h.Config(), false)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	rec := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	return func(domain string) ([]string, error) {
		if domain != "embargo._domainkey.ex.test" {
			return nil, &net.DNSError{Err: "no such host", Name: domain, IsNotFound: true}
		}
		return []string{rec}, nil
	}
}

// checkDKIM verifies m's DKIM signature and that it covers the RFC 8058
// fields (§4: the signature must cover List-Unsubscribe and
// List-Unsubscribe-Post).
func checkDKIM(t *testing.T, lookup func(string) ([]string, error), m queuetest.Message) {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != "ex.test" {
		t.Fatalf("DKIM of the message to %v: %v %+v", m.To, err, vs)
	}
	for _, k := range []string{"list-unsubscribe", "list-unsubscribe-post", "from"} {
		if !slices.ContainsFunc(vs[0].HeaderKeys, func(h string) bool { return strings.EqualFold(h, k) }) {
			t.Errorf("DKIM h= %v does not cover %s", vs[0].HeaderKeys, k)
		}
	}
}

// oneClickURL is the https URI of a message's List-Unsubscribe.
func oneClickURL(t *testing.T, m queuetest.Message) string {
	t.Helper()
	hd := daemontest.Header(t, m)
	if hd.Get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click" {
		t.Fatalf("message to %v has no List-Unsubscribe-Post", m.To)
	}
	u, _, _ := strings.Cut(hd.Get("List-Unsubscribe"), ">")
	u = strings.TrimPrefix(u, "<")
	if !strings.HasPrefix(u, "https://security.ex.test/unsubscribe/") || !strings.Contains(hd.Get("List-Unsubscribe"), "<mailto:announce+unsubscribe@ex.test") {
		t.Fatalf("List-Unsubscribe of the message to %v = %q", m.To, hd.Get("List-Unsubscribe"))
	}
	return u
}

// TestImportedSubscriberOneClick: an address imported while the daemon runs
// gets exactly one notice, signed by the announce key (gpg verifies it) and
// DKIM-signed over its one-click fields; the next release reaches it with
// the same per-subscriber one-click URI, and a POST to that URI at the web
// listener unsubscribes it, and only it; a later import does not bring it
// back.
func TestImportedSubscriberOneClick(t *testing.T) {
	f := newCmdFixtureWith(t, nil, "\n[http]\nlisten = \"127.0.0.1:0\"\nbase_url = \"https://security.ex.test\"\n[dkim]\nselector = \"embargo\"\n")
	lookup := dkimLookup(t, f.h)
	cfg := f.h.Config()
	const ann, bob = "ann@reader.test", "bob@reader.test"
	listing := []byte("Ann Reader <" + ann + ">\n" + bob + "\n")

	out, err := daemon.Subscribers(cfg, daemon.CtlSubscribersImport, []string{"members.txt"}, listing)
	if err != nil {
		t.Fatal(err)
	}
	daemontest.MustContain(t, "import output", out, "2 subscribed to announce@ex.test", "(sent)")
	notices := f.next(2)
	annFpr := f.reporter.Fingerprint("announce@ex.test")
	urls := map[string]string{}
	for _, m := range notices {
		st := f.reporter.VerifySigned(m.Data)
		daemontest.MustContain(t, "gpg --verify of the notice", st, "GOODSIG", "VALIDSIG "+annFpr)
		checkDKIM(t, lookup, m)
		u := oneClickURL(t, m)
		body := daemontest.Body(t, m)
		daemontest.MustContain(t, "notice", body, m.To[0]+" is subscribed", u, "announce+unsubscribe@ex.test")
		if hd := daemontest.Header(t, m); m.From != "" || hd.Get("Auto-Submitted") != "auto-generated" {
			t.Errorf("notice to %v: envelope from %q, Auto-Submitted %q", m.To, m.From, hd.Get("Auto-Submitted"))
		}
		urls[m.To[0]] = u
	}
	if len(urls) != 2 || urls[ann] == urls[bob] {
		t.Fatalf("notices: %v", urls)
	}
	// No second notice, ever: the same import again sends nothing.
	if out, err := daemon.Subscribers(cfg, daemon.CtlSubscribersImport, nil, listing); err != nil || !strings.Contains(out, "2 already subscribed") {
		t.Fatalf("second import: %v\n%s", err, out)
	}
	f.h.Settle(f.seen)

	// The release: each reader's copy carries the reader's own URI.
	f.prepare(t)
	f.discloseNow(0) // two SRC signatures: the two-person rule
	copies := map[string]queuetest.Message{}
	daemontest.WaitFor(t, "the release to reach both readers", func() bool {
		for _, m := range f.h.Rec.Messages()[f.seen:] {
			if len(m.To) == 1 && (m.To[0] == ann || m.To[0] == bob) && strings.Contains(string(m.Data), "Security Advisory") {
				copies[m.To[0]] = m
			}
		}
		return len(copies) == 2
	})
	for addr, m := range copies {
		if got := oneClickURL(t, m); got != urls[addr] {
			t.Errorf("%s's release copy names %s, its notice %s", addr, got, urls[addr])
		}
		checkDKIM(t, lookup, m)
		daemontest.MustContain(t, "gpg --verify of the release", f.reporter.VerifySigned(m.Data), "GOODSIG", "VALIDSIG "+annFpr)
		if hd := string(m.Data[:bytes.Index(m.Data, []byte("\r\n\r\n"))]); strings.Contains(hd, ann) && strings.Contains(hd, bob) {
			t.Errorf("a release copy names both readers")
		}
	}

	// One-click: the POST of RFC 8058 §3.2 at the web listener.
	u, err := url.Parse(urls[ann])
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Post("http://"+f.h.D.HTTPAddr().String()+u.Path, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("one-click POST = %d", res.StatusCode)
	}
	state := func(addr string) announce.State {
		var st announce.State
		f.h.D.View(func(tx *bolt.Tx) error {
			s, ok, _ := announce.Lookup(tx, addr)
			if ok {
				st = s.State
			}
			return nil
		})
		return st
	}
	if st := state(ann); st != "" {
		t.Errorf("ann is %q after her one-click POST, want gone", st)
	}
	if st := state(bob); st != announce.StateActive {
		t.Errorf("bob is %q after ann's one-click, want active", st)
	}
	seen := len(f.h.Rec.Messages())
	out, err = daemon.Subscribers(cfg, daemon.CtlSubscribersImport, []string{"members.txt"}, listing)
	if err != nil || !strings.Contains(out, "line 1: "+ann+" left the list on") || !strings.Contains(out, "(one-click unsubscribe)") {
		t.Errorf("import after the one-click: %v\n%s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	if msgs := f.h.Rec.Messages()[seen:]; len(daemontest.To(msgs, ann)) != 0 {
		t.Errorf("ann got mail after she left")
	}
}

// TestOneClickOff: with one_click = false the notice offers the mailto URI
// alone, even with an https base_url.
func TestOneClickOff(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{Extra: "\n[http]\nbase_url = \"https://security.ex.test\"\n[lists.announce]\none_click = false\n"}, daemon.Options{})
	if _, err := daemon.Subscribers(h.Config(), daemon.CtlSubscribersAdd, []string{"eve@reader.test"}, nil); err != nil {
		t.Fatal(err)
	}
	hd := daemontest.Header(t, h.Settle(1)[0])
	if got := hd.Get("List-Unsubscribe"); got != "<mailto:announce+unsubscribe@ex.test?subject=unsubscribe>" || hd.Get("List-Unsubscribe-Post") != "" {
		t.Errorf("List-Unsubscribe %q, -Post %q; want the mailto URI alone", got, hd.Get("List-Unsubscribe-Post"))
	}
}
