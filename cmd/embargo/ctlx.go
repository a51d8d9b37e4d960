package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// Commands that change the store, or stream it, through the control socket.
//
// Why through the daemon rather than refusing while it runs: bbolt allows one
// writer process, and the queue worker must hear of a retried row (Kick) or
// it sleeps until its next timer. The queue package already makes both
// operations safe against a delivery in flight: Retry refuses a row being
// sent, and Drop lets that one attempt finish and ignores its outcome. The
// socket is 0600 in the 0700 data directory, so whoever can use it could
// already open the store itself: writing through it widens nobody's access.

// ctlEnv is what a control handler may use.
type ctlEnv struct {
	db     *bolt.DB
	worker *queue.Worker
	log    *slog.Logger
}

// ctlHandler answers one request on c: "OK\n" and output, or "ERR reason\n".
type ctlHandler func(c net.Conn, env ctlEnv, args []string)

// ctlHandlers are the control commands beyond the read-only storeCommands.
var ctlHandlers = map[string]ctlHandler{
	"queue retry": ctlQueueWrite("queue retry", queueRetryOnline),
	"queue drop":  ctlQueueWrite("queue drop", queueDropOnline),
	"backup":      ctlBackup,
}

func ctlReply(c net.Conn, env ctlEnv, cmd string, out string, err error) {
	env.log.Info("control command", "cmd", cmd, "ok", err == nil)
	if err != nil {
		fmt.Fprintf(c, "ERR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	io.WriteString(c, "OK\n"+out)
}

func ctlQueueWrite(name string, f func(w *queue.Worker, id uint64) (string, error)) ctlHandler {
	return func(c net.Conn, env ctlEnv, args []string) {
		id, err := queueArg(args)
		var out string
		if err == nil {
			out, err = f(env.worker, id)
		}
		ctlReply(c, env, name, out, err)
	}
}

// ctlBackup streams a consistent copy of the store: "OK <size>\n" and exactly
// size bytes, written by one read transaction (bbolt's hot backup: writers go
// on meanwhile). The client checks the count, so a cut stream never passes for
// a backup.
func ctlBackup(c net.Conn, env ctlEnv, args []string) {
	// A large store takes longer than the default minute over a slow disk.
	_ = c.SetDeadline(time.Now().Add(time.Hour))
	err := env.db.View(func(tx *bolt.Tx) error {
		if _, err := fmt.Fprintf(c, "OK %d\n", tx.Size()); err != nil {
			return err
		}
		_, err := tx.WriteTo(c)
		return err
	})
	env.log.Info("control command", "cmd", "backup", "ok", err == nil)
}

// ctlDial connects to the running daemon, or returns nil when none answers.
func ctlDial(dataDir string) net.Conn {
	c, err := net.DialTimeout("unix", filepath.Join(dataDir, ctlSocket), time.Second)
	if err != nil {
		return nil
	}
	return c
}

// ctlSend sends a request and reads the status line: what follows "OK ",
// and a reader positioned on the output.
func ctlSend(c net.Conn, cmd string, args []string) (string, *bufio.Reader, error) {
	req, _ := json.Marshal(ctlRequest{Cmd: cmd, Args: args})
	if _, err := c.Write(append(req, '\n')); err != nil {
		return "", nil, fmt.Errorf("control socket: %w", err)
	}
	br := bufio.NewReader(c)
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
