package smtpd

import (
	"net"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestEHLOCarriesInstanceToken: the first line of the EHLO (and LHLO) reply is
// our domain, then "embargo" and this process's instance token, the mark by
// which the queue's client recognises its own listener (docs/threat-model.md
// B9). The other lines are go-smtp's extensions, untouched, and a HELO reply
// has no token.
func TestEHLOCarriesInstanceToken(t *testing.T) {
	tok := InstanceToken()
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(tok) || InstanceToken() != tok {
		t.Fatalf("InstanceToken = %q, then %q: want the same 24 hex digits", tok, InstanceToken())
	}
	_, addr := startServer(t, Options{}, &recorder{})
	lines := helloLines(t, "tcp", addr, "EHLO client.test")
	if want := "250-mx.test embargo " + tok + " Hello client.test"; lines[0] != want {
		t.Errorf("EHLO reply's first line = %q, want %q", lines[0], want)
	}
	if !slices.Contains(lines[1:], "250-PIPELINING") {
		t.Errorf("EHLO reply = %q: the extensions are gone", lines)
	}
	if lines := helloLines(t, "tcp", addr, "HELO client.test"); strings.Contains(strings.Join(lines, "\n"), tok) {
		t.Errorf("HELO reply = %q carries the token; only EHLO's first line does", lines)
	}
	sock := startLMTP(t, &recorder{})
	if lines := helloLines(t, "unix", sock, "LHLO mta.test"); !strings.HasPrefix(lines[0], "250-mx.test embargo "+tok+" ") {
		t.Errorf("LHLO reply's first line = %q, want the token", lines[0])
	}
}

// helloLines opens a connection, sends cmd after the greeting and returns the
// raw lines of its reply.
func helloLines(t *testing.T, network, addr, cmd string) []string {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	tp := textproto.NewConn(nc)
	if _, _, err := tp.ReadResponse(220); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if err := tp.PrintfLine("%s", cmd); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for {
		l, err := tp.ReadLine()
		if err != nil {
			t.Fatalf("%s: reply after %q: %v", cmd, lines, err)
		}
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return lines
		}
	}
}
