package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// Maildir is a Relay that delivers into a Maildir instead of the network: the
// development default (./embargo-data/outbox/) and a way to read what the
// daemon would have sent. Each recipient gets its own file, like an MDA
// delivering to per-user mailboxes, headed by Return-Path and Delivered-To
// lines that keep the envelope; the message follows with LF line ends.
//
// A Maildir holds mail in the local text convention, LF, as Postfix's local
// delivery and every MDA write it; mutt shows a stray CR as "^M". The SMTP
// form (CRLF, RFC 5321 §2.3.8) is only for the wire. Signed PGP/MIME parts
// still verify: a reader canonicalises line ends to CRLF before checking a
// signature (RFC 3156 §5, RFC 2046 §4.1.1).
//
// Delivery follows the Maildir protocol: write into tmp/, fsync, then rename
// into new/ and fsync the directory, so a reader never sees a partial file and
// a crash leaves at most a stray file in tmp/.
type Maildir struct {
	dir     string
	now     func() time.Time
	host    string
	pid     int
	counter atomic.Uint64
}

var _ Relay = (*Maildir)(nil)

// NewMaildir creates dir and its tmp, new and cur subdirectories (0700) if
// needed. Only opts.Now is used.
func NewMaildir(dir string, opts RelayOptions) (*Maildir, error) {
	opts = opts.withDefaults()
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("queue: maildir: %w", err)
		}
	}
	host, _ := os.Hostname()
	// The Maildir convention escapes the two characters that would break the
	// name: "/" and ":" (the info separator).
	host = strings.NewReplacer("/", `\057`, ":", `\072`).Replace(host)
	if host == "" {
		host = "localhost"
	}
	return &Maildir{dir: dir, now: opts.Now, host: host, pid: os.Getpid()}, nil
}

// Send writes one file per recipient. A crash between two recipients leaves
// the first one written; the retry writes it again (at-least-once).
func (m *Maildir) Send(ctx context.Context, from string, to []string, data []byte) error {
	if err := checkEnvelope(from, to); err != nil {
		return err
	}
	if err := checkData(data); err != nil {
		return err
	}
	// checkData guarantees every LF follows a CR and no CR stands alone,
	// so dropping each CR of a CRLF pair is the whole conversion.
	lf := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	for _, rcpt := range to {
		if err := ctx.Err(); err != nil {
			return err
		}
		head := fmt.Sprintf("Return-Path: <%s>\nDelivered-To: %s\n", from, rcpt)
		if err := m.deliver(head, lf); err != nil {
			return err
		}
	}
	return nil
}

func (m *Maildir) deliver(head string, data []byte) error {
	f, name, err := m.create()
	if err != nil {
		return err
	}
	tmp := filepath.Join(m.dir, "tmp", name)
	_, err = f.WriteString(head)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(m.dir, "new", name))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("queue: maildir: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if err := syncDir(filepath.Join(m.dir, "new")); err != nil {
		return fmt.Errorf("queue: maildir: %w", err)
	}
	return nil
}

// create opens a new file in tmp/ named <unixnano>.<pid>_<counter>.<host>.
// O_EXCL makes a clash (two processes, a clock step back) fail rather than
// overwrite; the counter then moves on.
func (m *Maildir) create() (*os.File, string, error) {
	for range 100 {
		name := fmt.Sprintf("%d.%d_%d.%s", m.now().UnixNano(), m.pid, m.counter.Add(1), m.host)
		f, err := os.OpenFile(filepath.Join(m.dir, "tmp", name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("queue: maildir: %w", err)
		}
		return f, name, nil
	}
	return nil, "", errors.New("queue: maildir: no unique file name")
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
