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
	"sync"
	"sync/atomic"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/internal/durable"
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
// Delivery follows the Maildir protocol: write into tmp/, make the file
// durable, then rename into new/ and fsync the directory, so a reader never
// sees a partial file and a crash leaves at most a stray file in tmp/. The
// worker hands the Maildir a batch of messages at once (BatchRelay): their
// files are written, made durable together (one syncfs(2) of the file
// system where there is one and it makes files durable, see
// maildir_linux.go; else each file synced, maildirSyncs at a time),
// renamed, and the directory synced once for the batch. A message counts as delivered only after all of that, so "sent" is
// never recorded for a file that is not both complete and durable (RFC 5321
// §6.1; docs/design.md §1, Outbound).
type Maildir struct {
	dir     string
	now     func() time.Time
	host    string
	pid     int
	counter atomic.Uint64

	// syncFile and syncDir make data durable; syncFS, nil where the system
	// has no syncfs(2), makes every file written in the file system of the
	// tmp/ it is given durable. rename moves a file into new/. Tests replace
	// them to watch the order of the steps, or to fail them.
	syncFile func(*os.File) error
	syncDir  func(dir string) error
	syncFS   func(tmp *os.File) error
	rename   func(oldpath, newpath string) error
}

var _ BatchRelay = (*Maildir)(nil)

// Maildir batches: at most maildirBatch messages. A batch of maildirFSMin
// files or more is made durable with one syncfs (see syncBatch); a smaller
// one has each file synced, maildirSyncs at a time. Measured on ext4: one
// file is faster with its own fsync, two about even, three or more faster
// with syncfs, and 64 about three times as fast.
const (
	maildirBatch = 64
	maildirSyncs = 16
	maildirFSMin = 3
)

// NewMaildir creates dir and its tmp, new and cur subdirectories (0700) if
// needed, each synced in the directory holding it. opts.Now names the
// files; opts.Logger is told once how batches are made durable.
//
// syncfs(2) is the fast path only where it makes the files durable: not on
// a FUSE file system (sshfs, some network and overlay mounts), whose server
// the kernel never asks to sync for it, nor on SMB/CIFS, whose client sends
// the server no flush for it (syncfsHonoured, maildir_linux.go). There each
// file is fsynced, as where there is no syncfs at all
// (TestMaildirPowerLoss found the batches lost on such a file system).
func NewMaildir(dir string, opts RelayOptions) (*Maildir, error) {
	opts = opts.withDefaults()
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := durable.MkdirAll(filepath.Join(dir, sub)); err != nil {
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
	m := &Maildir{dir: dir, now: opts.Now, host: host, pid: os.Getpid(),
		syncFile: (*os.File).Sync, syncDir: durable.SyncDir, syncFS: syncFS, rename: os.Rename}
	honoured, fsType := syncfsHonoured(dir)
	switch {
	case m.syncFS == nil:
		opts.log().Info("maildir relay: each file fsynced (no syncfs on this system)", "dir", dir)
	case !honoured:
		m.syncFS = nil
		opts.log().Info("maildir relay: each file fsynced: syncfs does not make files durable on this file system", "dir", dir, "fs", fsType)
	default:
		opts.log().Info("maildir relay: batches of 3 or more files made durable by one syncfs", "dir", dir, "fs", fsType)
	}
	return m, nil
}

// Send writes one file per recipient: SendBatch of one message.
func (m *Maildir) Send(ctx context.Context, from string, to []string, data []byte) error {
	return m.SendBatch(ctx, []Outgoing{{From: from, To: to, Data: data}})[0]
}

// MaxBatch is the most messages SendBatch takes at once.
func (m *Maildir) MaxBatch() int { return maildirBatch }

// mdFile is one file of a batch, in tmp/ until renamed.
type mdFile struct {
	msg  int // its message in the batch
	f    *os.File
	name string
}

// SendBatch writes one file per recipient of each message, headed by
// Return-Path and Delivered-To, with LF line ends. A message is delivered
// when all its files are: each written, made durable and renamed into new/,
// and new/ synced. A message one of whose files fails gets the error and
// none of its files goes into new/; a failed syncfs fails every message of
// the batch, none of whose files then goes into new/. A failure of the last
// directory sync fails every message renamed, and the retry may write files
// that already arrived (at-least-once).
func (m *Maildir) SendBatch(ctx context.Context, msgs []Outgoing) []error {
	errs := make([]error, len(msgs))
	tmp := m.openTmp(msgs)
	var files []mdFile
	for i, msg := range msgs {
		if errs[i] = m.write(ctx, i, msg, &files); errs[i] != nil {
			files = m.discard(files, i)
		}
	}
	// The Maildir protocol's order: every file durable before the first
	// rename, so that new/ never names a file a crash could leave empty.
	if tmp != nil {
		m.syncBatch(tmp, files, errs)
	} else {
		m.syncAll(files, errs)
	}
	renamed := false
	for _, f := range files {
		if errs[f.msg] != nil {
			os.Remove(filepath.Join(m.dir, "tmp", f.name))
			continue
		}
		if err := m.rename(filepath.Join(m.dir, "tmp", f.name), filepath.Join(m.dir, "new", f.name)); err != nil {
			errs[f.msg] = fmt.Errorf("queue: maildir: %w", err)
			os.Remove(filepath.Join(m.dir, "tmp", f.name))
			continue
		}
		renamed = true
	}
	if !renamed {
		return errs
	}
	// The renames are durable only once the directory is synced; only then
	// may the worker commit the rows as sent.
	if err := m.syncDir(filepath.Join(m.dir, "new")); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("queue: maildir: sync new/: %w", err)
			}
		}
	}
	return errs
}

// openTmp opens tmp/ for syncBatch when the batch has maildirFSMin files
// or more and the system has syncfs; else it returns nil, and each file is
// synced on its own. It is opened before the first file is written because
// syncfs reports the file system's writeback errors since the descriptor
// it is given was opened (Linux 5.8 and later, syncfs(2)): an error in
// writing back any of the batch's files reaches this batch.
func (m *Maildir) openTmp(msgs []Outgoing) *os.File {
	if m.syncFS == nil {
		return nil
	}
	n := 0
	for _, msg := range msgs {
		n += len(msg.To)
	}
	if n < maildirFSMin {
		return nil
	}
	tmp, err := os.Open(filepath.Join(m.dir, "tmp"))
	if err != nil {
		return nil // each file synced instead, which reports its own errors
	}
	return tmp
}

// syncBatch closes every file and makes them all durable with one syncFS
// on tmp/: the device cache is flushed a few times for the whole batch
// rather than once per file, which is what limits a Maildir's rate. The
// syncfs also writes back whatever else is dirty on that file system.
// A file whose close fails fails its message, as a failed write already
// has. A failed syncFS may have left any file of the batch short, so it
// fails every message of the batch: none is renamed into new/, and the
// queue retries them all.
func (m *Maildir) syncBatch(tmp *os.File, files []mdFile, errs []error) {
	defer tmp.Close()
	for _, f := range files {
		if err := f.f.Close(); err != nil && errs[f.msg] == nil {
			errs[f.msg] = fmt.Errorf("queue: maildir: %w", err)
		}
	}
	if len(files) == 0 {
		return
	}
	if err := m.syncFS(tmp); err != nil {
		for _, f := range files {
			if errs[f.msg] == nil {
				errs[f.msg] = fmt.Errorf("queue: maildir: syncfs: %w", err)
			}
		}
	}
}

// write checks one message and writes its files into tmp/, unsynced and
// still open, appending them to files.
func (m *Maildir) write(ctx context.Context, i int, msg Outgoing, files *[]mdFile) error {
	if err := checkEnvelope(msg.From, msg.To); err != nil {
		return err
	}
	if err := checkData(msg.Data); err != nil {
		return err
	}
	// checkData guarantees every LF follows a CR and no CR stands alone,
	// so dropping each CR of a CRLF pair is the whole conversion.
	lf := bytes.ReplaceAll(msg.Data, []byte("\r\n"), []byte("\n"))
	for _, rcpt := range msg.To {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, name, err := m.create()
		if err != nil {
			return err
		}
		*files = append(*files, mdFile{msg: i, f: f, name: name})
		head := fmt.Sprintf("Return-Path: <%s>\nDelivered-To: %s\n", msg.From, rcpt)
		if _, err := f.WriteString(head); err != nil {
			return fmt.Errorf("queue: maildir: %w", err)
		}
		if _, err := f.Write(lf); err != nil {
			return fmt.Errorf("queue: maildir: %w", err)
		}
	}
	return nil
}

// discard closes and removes the files of message i, the last in files.
func (m *Maildir) discard(files []mdFile, i int) []mdFile {
	for len(files) > 0 && files[len(files)-1].msg == i {
		f := files[len(files)-1]
		f.f.Close()
		os.Remove(filepath.Join(m.dir, "tmp", f.name))
		files = files[:len(files)-1]
	}
	return files
}

// syncAll syncs and closes every file, maildirSyncs at a time, and sets the
// error of each message one of whose files failed.
func (m *Maildir) syncAll(files []mdFile, errs []error) {
	failed := make([]error, len(files))
	var wg sync.WaitGroup
	sem := make(chan struct{}, maildirSyncs)
	for k, f := range files {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := m.syncFile(f.f)
			if cerr := f.f.Close(); err == nil {
				err = cerr
			}
			failed[k] = err
		})
	}
	wg.Wait()
	for k, err := range failed {
		if err != nil && errs[files[k].msg] == nil {
			errs[files[k].msg] = fmt.Errorf("queue: maildir: %w", err)
		}
	}
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
