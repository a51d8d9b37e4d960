package queue

import (
	"bytes"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

func TestMaildirRelay(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "embargo-data", "outbox")
	clock := newClock()
	relay, err := NewRelay("maildir://"+dir, RelayOptions{Now: clock.Now})
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	for _, sub := range []string{"", "tmp", "new", "cur"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s/%s: %v, mode %v; want a 0700 directory", dir, sub, err, fi.Mode().Perm())
		}
	}

	m := testMsg(1, "a@src.test", "b@src.test")
	if err := relay.Send(t.Context(), "", m.To, m.Data); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %d files after delivery, want 0", len(tmp))
	}
	files, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil || len(files) != 2 {
		t.Fatalf("new/ = %d files, %v; want one per recipient", len(files), err)
	}
	name := regexp.MustCompile(`^(\d+)\.(\d+)_(\d+)\.[^/:]+$`)
	var delivered []string
	for _, f := range files {
		parts := name.FindStringSubmatch(f.Name())
		if parts == nil {
			t.Errorf("file name %q is not <unixnano>.<pid>_<counter>.<host>", f.Name())
		} else if parts[1] != "1772442000000000000" {
			t.Errorf("file name %q does not start with the clock's unix nanoseconds", f.Name())
		}
		fi, _ := f.Info()
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f.Name(), fi.Mode().Perm())
		}
		raw, err := os.ReadFile(filepath.Join(dir, "new", f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(bytes.NewReader(raw))
		if err != nil {
			t.Fatalf("%s does not parse: %v", f.Name(), err)
		}
		if got := msg.Header.Get("Return-Path"); got != "<>" {
			t.Errorf("Return-Path = %q, want <>", got)
		}
		if got := msg.Header.Get("Message-Id"); got != m.MessageID {
			t.Errorf("Message-ID = %q, want %q", got, m.MessageID)
		}
		delivered = append(delivered, msg.Header.Get("Delivered-To"))
		body, _ := io.ReadAll(msg.Body)
		lf := bytes.ReplaceAll(m.Data, []byte("\r\n"), []byte("\n"))
		if !bytes.HasSuffix(raw, lf) || !bytes.HasSuffix(lf, body) {
			t.Errorf("%s: the message changed beyond its line ends", f.Name())
		}
		if bytes.IndexByte(raw, '\r') >= 0 {
			t.Errorf("%s: a CR in the Maildir file; mail in a Maildir has LF line ends", f.Name())
		}
	}
	slices.Sort(delivered)
	if !slices.Equal(delivered, m.To) {
		t.Errorf("Delivered-To = %q, want %q", delivered, m.To)
	}
}

func TestMaildirRelayThroughWorker(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "outbox")
	relay, err := NewMaildir(dir, RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db := tempDB(t)
	w := start(t, db, relay, Options{})
	enqueueNow(t, db, time.Now(), testMsg(1), testMsg(2), testMsg(3))
	w.Kick()
	waitUntil(t, "empty queue", emptyQueue(t, db))
	if files, _ := os.ReadDir(filepath.Join(dir, "new")); len(files) != 3 {
		t.Errorf("new/ holds %d files, want 3", len(files))
	}
	// A bad row fails at the Maildir as it would at a smarthost.
	bad := testMsg(4)
	bad.Data = []byte("Subject: x\n\nbare LF\n")
	ids := enqueueNow(t, db, time.Now(), bad)
	w.Kick()
	waitUntil(t, "a failed row", func() bool {
		r, err := getRow(t, db, ids[0])
		return err == nil && r.State == StateFailed
	})
}
