package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/queue"
)

// The control socket lets admin commands read the store while the daemon holds
// bbolt's file lock (as mox's ctl socket does). It lives in the data directory,
// mode 0600: whoever can read the store can use it, nobody else.
const ctlSocket = "embargo.sock"

type ctlRequest struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args"`
}

// serveCtl answers control requests until ctx is done.
func serveCtl(ctx context.Context, dir string, db *bolt.DB, w *queue.Worker, log *slog.Logger) (func(), error) {
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
			go handleCtl(c, db, w, log)
		}
	}()
	return func() { l.Close(); os.Remove(path) }, nil
}

func handleCtl(c net.Conn, db *bolt.DB, w *queue.Worker, log *slog.Logger) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	var req ctlRequest
	line, err := bufio.NewReader(io.LimitReader(c, 64<<10)).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	if err != nil {
		fmt.Fprintf(c, "ERR bad request\n")
		return
	}
	// Commands that write or stream (queue retry/drop, backup): ctlx.go.
	if h, ok := ctlHandlers[req.Cmd]; ok {
		h(c, ctlEnv{db: db, worker: w, log: log}, req.Args)
		return
	}
	cmd, ok := storeCommands[req.Cmd]
	if !ok {
		fmt.Fprintf(c, "ERR unknown command %q\n", req.Cmd)
		return
	}
	var out bytes.Buffer
	err = db.View(func(tx *bolt.Tx) error { return cmd(tx, req.Args, &out) })
	log.Info("control command", "cmd", req.Cmd, "ok", err == nil)
	if err != nil {
		fmt.Fprintf(c, "ERR %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	io.WriteString(c, "OK\n")
	c.Write(out.Bytes())
}

// runStoreCommand runs a read-only admin command through the daemon if it is
// running, else directly on the store.
func runStoreCommand(dataDir, name string, args []string, w io.Writer) error {
	c, err := net.DialTimeout("unix", filepath.Join(dataDir, ctlSocket), time.Second)
	if err == nil {
		defer c.Close()
		req, _ := json.Marshal(ctlRequest{Cmd: name, Args: args})
		if _, err := c.Write(append(req, '\n')); err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		br := bufio.NewReader(c)
		status, err := br.ReadString('\n')
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		if msg, isErr := strings.CutPrefix(status, "ERR "); isErr {
			return errors.New(strings.TrimSpace(msg))
		}
		_, err = io.Copy(w, br)
		return err
	}
	db, err := openStore(dataDir, true)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error { return storeCommands[name](tx, args, w) })
}
