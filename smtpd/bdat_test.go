package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// errSecretStorage is a storage failure whose text must never reach the client.
var errSecretStorage = errors.New(secret)

// slowAbortLog is a log sink that is slow exactly for the line smtpd writes when a
// BDAT transfer is cut off by RSET. It widens go-smtp's window (conn.go handleBdat:
// the aborted transfer's goroutine sends its result to the connection's current
// dataResult channel after Session.Data returns) so that a test sees the stale result
// every time, instead of once in many runs.
type slowAbortLog struct{ slog.Handler }

func (h slowAbortLog) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "transfer") {
		time.Sleep(50 * time.Millisecond)
	}
	return h.Handler.Handle(ctx, r)
}

func (h slowAbortLog) WithAttrs(as []slog.Attr) slog.Handler {
	return slowAbortLog{h.Handler.WithAttrs(as)}
}

func (h slowAbortLog) WithGroup(n string) slog.Handler { return slowAbortLog{h.Handler.WithGroup(n)} }

func startSlowAbortServer(t *testing.T, h Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Not the test's log: the aborted transfer's goroutine may still be logging when
	// the test has ended.
	log := slog.New(slowAbortLog{slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug})})
	srv := New(Options{Domain: "mx.test"}, h, log)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return l.Addr().String()
}

// TestBDATResetPipelined sends, in one write, a BDAT chunk, RSET and a whole new BDAT
// transaction, many times over one connection. Every reply must belong to its own
// command, and the reply to each BDAT LAST must say exactly what happened to that
// message: 250 if and only if the Handler stored it. Run with -race: go-smtp's
// goroutine for the aborted transfer touches the connection's fields after RSET.
func TestBDATResetPipelined(t *testing.T) {
	for _, first := range []string{"BDAT 5\r\nabcde", "BDAT 0\r\n"} {
		t.Run(strings.Fields(first)[0]+" "+strings.Fields(first)[1], func(t *testing.T) {
			// The Handler is slower than the aborted transfer's goroutine, whose result
			// would otherwise land first.
			rec := &recorder{handleDelay: 200 * time.Millisecond}
			addr := startSlowAbortServer(t, rec)
			c := dialRaw(t, addr)
			c.greet()
			const rounds = 5
			for i := range rounds {
				msg := fmt.Sprintf("Subject: round %d\r\n\r\nbody\r\n", i)
				c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\n" + first +
					"RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<security@ex.org>\r\n" +
					fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
				want := []int{250, 250, 250, 250, 250, 250, 250}
				var got []int
				for range want {
					got = append(got, c.read().code)
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("round %d: replies %v, want %v", i, got, want)
				}
				if n := len(rec.delivered()); n != i+1 {
					t.Fatalf("round %d: Handle called %d times, want %d", i, n, i+1)
				}
			}
			for i, d := range rec.delivered() {
				if want := fmt.Sprintf("Subject: round %d\r\n\r\nbody\r\n", i); string(d.msg) != want {
					t.Errorf("message %d = %q, want %q (nothing of the aborted chunk)", i, d.msg, want)
				}
			}
		})
	}
}

// TestBDATLastReply checks the reply to BDAT LAST against what the Handler did, for
// each way a BDAT transaction can end.
func TestBDATLastReply(t *testing.T) {
	tests := []struct {
		name      string
		handleErr error
		script    string // after MAIL and RCPT
		codes     []int  // replies to the script's commands
		stored    int
	}{
		{"stored", nil, "BDAT 3\r\nSub" + "BDAT 17 LAST\r\nject: x\r\n\r\nbody\r\n", []int{250, 250}, 1},
		{"storage error", errSecretStorage, "BDAT 20 LAST\r\nSubject: x\r\n\r\nbody\r\n", []int{451}, 0},
		{"policy refusal", refusal(550, "5.7.1", "plaintext refused"), "BDAT 20 LAST\r\nSubject: x\r\n\r\nbody\r\n", []int{550}, 0},
		{"bare CR in the last chunk", nil, "BDAT 3\r\nSub" + "BDAT 16 LAST\r\nject: x\r\r\nbody\r\n", []int{250, 550}, 0},
		{"RSET between chunks", nil, "BDAT 3\r\nSub" + "RSET\r\n", []int{250, 250}, 0},
		{"EHLO between chunks", nil, "BDAT 3\r\nSub" + "EHLO c.test\r\n", []int{250, 250}, 0},
		{"DATA between chunks", nil, "BDAT 3\r\nSub" + "DATA\r\n", []int{250, 502}, 0},
		{"empty message", nil, "BDAT 0 LAST\r\n", []int{554}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{handleErr: tc.handleErr}
			_, addr := startServer(t, Options{}, rec)
			c := dialRaw(t, addr)
			c.greet()
			begin(t, c)
			c.send(tc.script)
			var got []int
			for range tc.codes {
				got = append(got, c.read().code)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.codes) {
				t.Errorf("replies = %v, want %v", got, tc.codes)
			}
			// The session goes on: the next transaction gets its own replies.
			if r := c.cmd("RSET"); r.code != 250 {
				t.Errorf("RSET after the script = %v, want 250", r)
			}
			stored := 0
			if tc.handleErr == nil {
				stored = len(rec.delivered())
			}
			if stored != tc.stored {
				t.Errorf("stored %d messages, want %d", stored, tc.stored)
			}
		})
	}
}
