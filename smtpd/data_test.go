package smtpd

import (
	"strings"
	"testing"
)

func TestBareLineEnd(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", -1},
		{"abc", -1},
		{"a\r\nb\r\n", -1},
		{"\r\n\r\n", -1},
		{"\n", 0},
		{"\r", 0},
		{"a\nb", 1},
		{"a\rb", 1},
		{"a\r\r\n", 1},
		{"a\r\n\n", 3},
		{"a\r\nb\r", 4},
		{"\r\n.\n", 3},
		{"\n\r", 0},
	}
	for _, tc := range tests {
		if got := bareLineEnd([]byte(tc.in)); got != tc.want {
			t.Errorf("bareLineEnd(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestCountReceived(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int
	}{
		{"none", simpleMsg, 0},
		{"three", received(3) + simpleMsg, 3},
		{"case and space before colon", "received: a\r\nRECEIVED : b\r\nReceived\t: c\r\n\r\n", 3},
		{"folded field counts once", "Received: from a\r\n by b;\r\n date\r\n\r\n", 1},
		{"not a field name", "Received-SPF: pass\r\nX-Received: a\r\nReceivedx: b\r\n\r\n", 0},
		{"body does not count", "Subject: x\r\n\r\n" + received(5), 0},
		{"stops after limit", received(100), 11},
		{"no body", strings.TrimSuffix(received(2), "\r\n"), 2},
	}
	for _, tc := range tests {
		if got := countReceived([]byte(tc.in), 10); got != tc.want {
			t.Errorf("%s: countReceived() = %d, want %d", tc.name, got, tc.want)
		}
	}
}
