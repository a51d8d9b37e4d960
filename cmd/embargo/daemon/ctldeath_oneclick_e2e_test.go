package daemon_test

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue/queuetest"
)

// oneClickPost is the RFC 8058 §3.2 POST of a mail client to the one-click
// URI uri, at the web listener on addr once it listens: an error unless
// the answer is 200.
func oneClickPost(addr, uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		} else if time.Now().After(deadline) {
			return "", err
		}
	}
	res, err := http.Post("http://"+addr+u.Path, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		return "", err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("one-click POST: %s", res.Status)
	}
	return res.Status, nil
}

// killedAtOneClick is TestProcessKilledAtCtl's case of the one-click
// unsubscribe over HTTP: the reader's POST to the URI of their notice is
// killed before its transaction or after its commit, before the answer;
// the client got no 200 and posts again, as a one-click client retries,
// then once more (a replay). After the death the reader is subscribed
// (begin) or gone with one record of leaving by one-click (done); after
// the retries gone, with that one record, the other subscriber untouched,
// nothing sent to either. Added back by an operator, the reader is not
// unsubscribed by the old URI again: its token died with the subscription.
func killedAtOneClick(t *testing.T, step string) {
	const reader, other = "reader@out.test", "other@out.test"
	web := daemontest.FreePort(t)
	h := daemontest.New(t, daemontest.Config{Extra: fmt.Sprintf("\n[http]\nlisten = %q\nbase_url = \"https://security.ex.test\"\n", web)}, daemon.Options{})
	subscribe(t, h, reader, other)
	uri := oneClickURL(t, daemontest.To(h.Rec.Messages(), reader)[0])
	h.Stop()

	post := func() (string, error) { return oneClickPost(web, uri) }
	c := &ctlDeath{h: h, cmd: "one-click", step: step, point: "oneclick-" + step + " POST", run: post,
		more: func() { // the replay
			if _, err := post(); err != nil {
				t.Errorf("the POST replayed: %v", err)
			}
		}}
	c.kill(t)
	wrote := step == "done"
	if s := readList(t, h.Dir, reader); s.active[reader] == wrote || !s.active[other] || (s.left == 1) != wrote || (s.leftHow[reader] == announce.LeftOneClick) != wrote {
		t.Errorf("after the death: %+v; want %s unsubscribed: %v", s, reader, wrote)
	}
	msgs, _, err := c.again(t, func([]queuetest.Message) bool { return true })
	if err != nil {
		t.Errorf("the POST retried: %v", err)
	}
	if len(msgs) != 0 {
		t.Errorf("the one-click sent mail:\n%s", daemontest.Summary(msgs))
	}
	s := readList(t, h.Dir, reader)
	if s.active[reader] || !s.active[other] || s.count != 1 || s.left != 1 || s.leftHow[reader] != announce.LeftOneClick {
		t.Errorf("after the retry and the replay: %+v; want %s gone, one record of its leaving, %s active", s, reader, other)
	}

	// The owner asks to come back; the old URI, replayed, changes nothing.
	h.Start()
	subscribe(t, h, reader)
	if _, err := oneClickPost(web, uri); err != nil {
		t.Errorf("the old URI posted after the return: %v", err)
	}
	h.D.View(func(tx *bolt.Tx) error {
		sub, ok, _ := announce.Lookup(tx, reader)
		if n, _ := announce.Count(tx); !ok || sub.State != announce.StateActive || n != 2 {
			t.Errorf("after the old URI: %s %+v (%v), %d subscribers; want it active, 2", reader, sub, ok, n)
		}
		return nil
	})
}
