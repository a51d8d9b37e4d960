package daemon_test

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// TestDroppedConnection: a client sends the final dot and drops the
// connection without reading the reply, then sends the same bytes again, as
// an MTA that lost our 250 does (RFC 1047; docs/threat-model.md A4): one
// incident, one acknowledgement, one copy to each SRC member, and the second
// delivery logged as a duplicate. Once with a raw Go client, once with
// swaks --drop-after-send DOT.
func TestDroppedConnection(t *testing.T) {
	h := daemontest.New(t, daemontest.Config{}, daemon.Options{})
	drop := map[string]func(t *testing.T, from string, raw []byte){
		"go": func(t *testing.T, from string, raw []byte) {
			if err := sendAndDrop(h.Addr(), from, "security@ex.test", raw); err != nil {
				t.Fatal(err)
			}
		},
	}
	again := map[string]func(t *testing.T, from string, raw []byte){
		"go": func(t *testing.T, from string, raw []byte) {
			if err := daemontest.SendRawSMTP(h.Addr(), from, []string{"security@ex.test"}, raw); err != nil {
				t.Fatalf("the same bytes again: %v", err)
			}
		},
	}
	if swaks, err := exec.LookPath("swaks"); err == nil {
		run := func(t *testing.T, from string, raw []byte, extra ...string) string {
			file := filepath.Join(t.TempDir(), "msg.eml")
			daemontest.WriteFile(t, file, string(raw))
			args := append([]string{"--server", h.Addr(), "--from", from, "--to", "security@ex.test", "--data", file}, extra...)
			out, _ := exec.Command(swaks, args...).CombinedOutput()
			return string(out)
		}
		drop["swaks"] = func(t *testing.T, from string, raw []byte) {
			out := run(t, from, raw, "--drop-after-send", "DOT")
			if _, after, ok := strings.Cut(out, " -> .\n"); !ok || strings.Contains(after, "<-") || !strings.Contains(after, "Dropping connection") {
				t.Fatalf("swaks --drop-after-send DOT: want the dot sent and no reply read:\n%s", out)
			}
		}
		again["swaks"] = func(t *testing.T, from string, raw []byte) {
			out := run(t, from, raw)
			if _, after, ok := strings.Cut(out, " -> .\n"); !ok || !strings.Contains(after, "<-  250") {
				t.Fatalf("swaks, the same bytes again: want 250:\n%s", out)
			}
		}
	} else {
		t.Log("swaks not installed: the Go client only")
	}
	sent := 0
	for _, name := range []string{"go", "swaks"} {
		if drop[name] == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			from := name + "-reporter@out.test"
			subj := "dropped after the dot, " + name
			raw := []byte(daemontest.CRLF(daemontest.Report(from, subj, "a finding sent twice")))
			drop[name](t, from, raw)
			// The message is processed although nobody reads the reply
			// (the client's retry comes after its timeout, not at once).
			daemontest.WaitFor(t, "the dropped message's incident", func() bool { return countSubject(t, h, subj) == 1 })
			again[name](t, from, raw)
			sent += 3 // the ack and a copy to each of the two SRC members
			msgs := h.Settle(sent)
			if n := countSubject(t, h, subj); n != 1 {
				t.Errorf("%d incidents for the report sent twice, want 1", n)
			}
			if n := len(daemontest.To(msgs, from)); n != 1 {
				t.Errorf("%d acknowledgements to the reporter, want 1", n)
			}
			if n := strings.Count(h.Logs.String(), "result=duplicate"); n != len(h.Rec.Messages())/3 {
				t.Errorf("%d deliveries logged as duplicates, want one per report", n)
			}
		})
	}
}

// countSubject is how many incidents have subj.
func countSubject(t *testing.T, h *daemontest.Harness, subj string) int {
	n := 0
	for _, inc := range listIncidents(t, h) {
		if inc.Subject == subj {
			n++
		}
	}
	return n
}

// sendAndDrop sends one message and closes the connection as soon as the
// final dot is written, reading no reply to it.
func sendAndDrop(addr, from, to string, raw []byte) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	reply := func(want string) error {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if !strings.HasPrefix(line, want) {
				return fmt.Errorf("reply %q, want %s", strings.TrimSpace(line), want)
			}
			if len(line) > 3 && line[3] == ' ' {
				return nil
			}
		}
	}
	if err := reply("220"); err != nil {
		return err
	}
	for _, st := range [][2]string{{"EHLO client.test", "250"}, {"MAIL FROM:<" + from + ">", "250"}, {"RCPT TO:<" + to + ">", "250"}, {"DATA", "354"}} {
		if _, err := fmt.Fprintf(conn, "%s\r\n", st[0]); err != nil {
			return err
		}
		if err := reply(st[1]); err != nil {
			return fmt.Errorf("%s: %w", st[0], err)
		}
	}
	body := strings.ReplaceAll(string(raw), "\r\n.", "\r\n..")
	if !strings.HasSuffix(body, "\r\n") {
		body += "\r\n"
	}
	_, err = conn.Write([]byte(body + ".\r\n"))
	return err
}
