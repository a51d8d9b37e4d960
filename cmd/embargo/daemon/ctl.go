package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/announce"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// The control socket lets admin commands use the store while the daemon
// holds bbolt's file lock (as mox's ctl socket does). It lives in the data
// directory, mode 0600: whoever can read the store can use it, nobody else.
//
// Why commands that write (queue retry, drop, release resume) go through
// the daemon rather than being refused while it runs: bbolt allows one
// writer process, and the queue worker or the announce fan-out must hear of
// a retried row or a resumed release (Kick) or it sleeps until its next
// timer. The queue package makes both safe against a delivery in flight:
// Retry refuses a row being sent, and Drop lets that one attempt finish and
// ignores its outcome. The socket is 0600 in the 0700 data directory, so
// whoever can use it could already open the store itself: writing through
// it widens nobody's access.
//
// The protocol: one JSON request line {"cmd","args"[,"size"]}, then size
// bytes of input (a members listing to import); the answer is a status line,
// "OK[ detail]" followed by the output, or "ERR reason".
const ctlSocket = "embargo.sock"

type ctlRequest struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args"`
	Size int64    `json:"size,omitempty"`
}

// maxCtlInput bounds the input that follows a request line.
const maxCtlInput = announce.MaxListingBytes

// ReadCommand is an admin command that reads the store and writes its
// output to w. It runs in-process when no daemon holds the file, or inside
// the daemon behind the control socket (Options.Commands).
type ReadCommand func(tx *bolt.Tx, args []string, w io.Writer) error

// ctlServer answers control requests.
type ctlServer struct {
	db     *bolt.DB
	worker *queue.Worker
	fanout *announce.Fanout // the announce releases (`embargo release resume`)
	reads  map[string]ReadCommand
	subs   *subscriberOps // the announce list's subscriber changes
	now    func() time.Time
	log    *slog.Logger
	// hook is the tests' failpoint at the step boundaries of a write
	// (export_test.go WithCtl); nil in embargo.
	hook func(cmd, step string)
}

// ctlWrites are the requests that change the store: the tests kill the
// daemon before each and after it, before its answer.
var ctlWrites = map[string]bool{CtlSubscribersAdd: true, CtlSubscribersRemove: true, CtlSubscribersImport: true,
	"queue retry": true, "queue drop": true, CtlReleaseResume: true}

func (s *ctlServer) step(cmd, step string) {
	if s.hook != nil && ctlWrites[cmd] {
		s.hook(cmd, step)
	}
}

// serveCtl answers control requests with s until the returned func closes it.
func serveCtl(dir string, s *ctlServer) (func(), error) {
	path := filepath.Join(dir, ctlSocket)
	// A socket left by a killed daemon: we hold the store lock, so it is stale.
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.handle(c)
		}
	}()
	return func() { l.Close(); os.Remove(path) }, nil
}

func (s *ctlServer) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	req, input, err := readCtlRequest(c)
	if err != nil {
		fmt.Fprintf(c, "ERR bad request\n")
		return
	}
	var out string
	s.step(req.Cmd, "begin")
	switch req.Cmd {
	case CtlSubscribersAdd, CtlSubscribersRemove, CtlSubscribersImport:
		// Each transaction of an import also signs its notices: a large
		// listing takes minutes on a slow host.
		_ = c.SetDeadline(time.Now().Add(time.Hour))
		if s.subs == nil {
			err = errors.New("this daemon has no announce list service")
		} else {
			out, err = s.subs.run(req.Cmd, req.Args, input)
		}
	case "backup":
		s.backup(c)
		return
	case "queue retry", "queue drop":
		var id uint64
		if id, err = strconv.ParseUint(strings.Join(req.Args, " "), 10, 64); err != nil {
			err = fmt.Errorf("%q is not a queue row ID", strings.Join(req.Args, " "))
		} else if req.Cmd == "queue retry" {
			out, err = queueResult(id, "is due now and handed to the delivery worker\n", s.worker.Retry(id))
		} else {
			out, err = s.queueDrop(id)
		}
	case CtlReleaseResume:
		out, err = s.releaseResume(req.Args)
	default:
		cmd, ok := s.reads[req.Cmd]
		if !ok {
			fmt.Fprintf(c, "ERR unknown command %q\n", req.Cmd)
			return
		}
		var b bytes.Buffer
		err = s.db.View(func(tx *bolt.Tx) error { return cmd(tx, req.Args, &b) })
		out = b.String()
	}
	s.log.Info("control command", "cmd", req.Cmd, "ok", err == nil)
	s.step(req.Cmd, "done")
	if err != nil {
		fmt.Fprintf(c, "ERR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	io.WriteString(c, "OK\n"+out)
}

// readCtlRequest reads the request line (at most 64 KiB) and the input that
// follows it.
func readCtlRequest(c net.Conn) (ctlRequest, []byte, error) {
	var req ctlRequest
	lr := &io.LimitedReader{R: c, N: 64 << 10}
	br := bufio.NewReader(lr)
	line, err := br.ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil || req.Size == 0 {
		return req, nil, err
	}
	if req.Size < 0 || req.Size > maxCtlInput {
		return req, nil, fmt.Errorf("control socket: input of %d bytes", req.Size)
	}
	lr.N += req.Size // what br has buffered was counted already
	in := make([]byte, req.Size)
	if _, err := io.ReadFull(br, in); err != nil {
		return req, nil, err
	}
	return req, in, nil
}

// queueDrop drops a row through the daemon. Drop lets an attempt under way
// finish (its outcome is then ignored), so the copy may still reach the
// relay after the row is gone: the answer says so when the row was being
// sent, read in the transaction that drops it (a running daemon's store
// has a row "sending" only while this process sends it: the worker turns
// a dead process's back to queued at start).
func (s *ctlServer) queueDrop(id uint64) (string, error) {
	var sending bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		r, err := queue.Info(tx, id)
		if err != nil {
			return err
		}
		sending = r.State == queue.StateSending
		return queue.Drop(tx, id)
	})
	done := "dropped\n"
	if sending {
		done = "dropped; an attempt to deliver it was under way and may still reach the relay (its outcome is ignored)\n"
	}
	return queueResult(id, done, err)
}

// backup streams a consistent copy of the store: "OK <size>\n" and exactly
// size bytes, written by one read transaction (bbolt's hot backup: writers go
// on meanwhile). The client checks the count, so a cut stream never passes for
// a backup.
func (s *ctlServer) backup(c net.Conn) {
	// A large store takes longer than the default minute over a slow disk.
	_ = c.SetDeadline(time.Now().Add(time.Hour))
	err := s.db.View(func(tx *bolt.Tx) error {
		if _, err := fmt.Fprintf(c, "OK %d\n", tx.Size()); err != nil {
			return err
		}
		_, err := tx.WriteTo(c)
		return err
	})
	s.log.Info("control command", "cmd", "backup", "ok", err == nil)
}

// Ctl is a connection to a running daemon's control socket.
type Ctl struct{ c net.Conn }

// DialCtl connects to the daemon that runs on dataDir; nil when none answers.
func DialCtl(dataDir string) *Ctl {
	c, err := net.DialTimeout("unix", filepath.Join(dataDir, ctlSocket), time.Second)
	if err != nil {
		return nil
	}
	return &Ctl{c}
}

// Running reports whether a daemon answers on dataDir's control socket.
func Running(dataDir string) bool {
	c := DialCtl(dataDir)
	if c != nil {
		c.Close()
	}
	return c != nil
}

// Close closes the connection.
func (c *Ctl) Close() error { return c.c.Close() }

// Call sends one request and reads the status line. It returns what follows
// "OK " and a reader positioned on the output, or the daemon's refusal as an
// error. A Ctl carries one call.
func (c *Ctl) Call(cmd string, args []string) (string, *bufio.Reader, error) {
	return c.CallWith(cmd, args, nil)
}

// CallWith is Call with input after the request line (a file to import).
func (c *Ctl) CallWith(cmd string, args []string, input []byte) (string, *bufio.Reader, error) {
	if len(input) > maxCtlInput {
		return "", nil, fmt.Errorf("the input has %d bytes; the daemon takes at most %d", len(input), maxCtlInput)
	}
	req, _ := json.Marshal(ctlRequest{Cmd: cmd, Args: args, Size: int64(len(input))})
	if _, err := c.c.Write(append(append(req, '\n'), input...)); err != nil {
		return "", nil, fmt.Errorf("control socket: %w", err)
	}
	br := bufio.NewReader(c.c)
	status, err := br.ReadString('\n')
	if err != nil {
		return "", nil, fmt.Errorf("control socket: %w", err)
	}
	status = strings.TrimSuffix(status, "\n")
	if msg, isErr := strings.CutPrefix(status, "ERR "); isErr {
		return "", nil, errors.New(msg)
	}
	if status != "OK" && !strings.HasPrefix(status, "OK ") {
		return "", nil, fmt.Errorf("control socket: unexpected reply %q", status)
	}
	return strings.TrimPrefix(strings.TrimPrefix(status, "OK"), " "), br, nil
}

// Read runs the read-only command name: through the running daemon if there
// is one (which must know it in Options.Commands), else on the store file.
func Read(dataDir string, cmds map[string]ReadCommand, name string, args []string, w io.Writer) error {
	if c := DialCtl(dataDir); c != nil {
		defer c.Close()
		_, out, err := c.Call(name, args)
		if err != nil {
			return err
		}
		_, err = io.Copy(w, out)
		return err
	}
	db, err := OpenStore(dataDir, true)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { return cmds[name](tx, args, w) })
}

// QueueRetry makes a queued or failed row due now, with a fresh attempt
// count and lifetime: through the daemon, or on the store when none runs. It
// returns a sentence saying what happened.
func QueueRetry(dataDir string, id uint64, now time.Time) (string, error) {
	return queueWrite(dataDir, "queue retry", id, "is due now; the daemon sends it when it starts\n",
		func(tx *bolt.Tx) error { return queue.Retry(tx, id, now) })
}

// QueueDrop deletes a row for good, like QueueRetry.
func QueueDrop(dataDir string, id uint64) (string, error) {
	return queueWrite(dataDir, "queue drop", id, "dropped\n", func(tx *bolt.Tx) error { return queue.Drop(tx, id) })
}

func queueWrite(dataDir, cmd string, id uint64, done string, offline func(*bolt.Tx) error) (string, error) {
	if c := DialCtl(dataDir); c != nil {
		defer c.Close()
		_, br, err := c.Call(cmd, []string{strconv.FormatUint(id, 10)})
		if err != nil {
			return "", err
		}
		b, err := io.ReadAll(br)
		return string(b), err
	}
	db, err := openStore(dataDir, modeWrite, slog.Default())
	if err != nil {
		return "", err
	}
	defer db.Close()
	return queueResult(id, done, db.Update(offline))
}

// queueResult turns the queue's errors into sentences an operator can act on.
func queueResult(id uint64, done string, err error) (string, error) {
	switch {
	case err == nil:
		return fmt.Sprintf("row %d %s", id, done), nil
	case errors.Is(err, queue.ErrNotFound):
		// A row leaves the queue when it is delivered or dropped: a retry
		// or drop run again after a lost answer, or after the worker sent
		// the row, lands here. The store cannot tell which, and the ID
		// may be wrong: the listing shows what is left.
		return "", fmt.Errorf("no queue row %d: it may have been delivered or dropped already, or the ID is wrong; `embargo queue list` shows the rows still queued or failed", id)
	case errors.Is(err, queue.ErrSending):
		return "", fmt.Errorf("row %d is being delivered right now: wait for the attempt to end (`embargo queue list`) and retry it then if it failed", id)
	}
	return "", err
}
