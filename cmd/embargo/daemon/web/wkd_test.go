package web

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

func TestWKDHash(t *testing.T) {
	tests := []struct {
		name, addr, want string
	}{
		// draft-koch-openpgp-webkey-service §3.1, the example.
		{"draft example", "Joe.Doe@Example.ORG", "iy9q119eutrkn8s1mk4r39qejnbu3n5q"},
		{"case of the local part does not matter", "joe.doe@example.org", "iy9q119eutrkn8s1mk4r39qejnbu3n5q"},
		{"local part alone", "JOE.DOE", "iy9q119eutrkn8s1mk4r39qejnbu3n5q"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := WKDHash(tt.addr); got != tt.want {
				t.Errorf("WKDHash(%q) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

func TestZBase32(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, ""},
		{"zero byte", []byte{0}, "yy"},
		{"all ones", []byte{0xff}, "9h"},
		// 5 bytes are 40 bits: exactly 8 characters, no padding.
		{"forty bits", []byte{0, 0, 0, 0, 0}, "yyyyyyyy"},
		{"first bit", []byte{0x80}, "oy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ZBase32(tt.in); got != tt.want {
				t.Errorf("ZBase32(%x) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	// 20 bytes of SHA-1 are 160 bits: 32 characters.
	if got := len(ZBase32(make([]byte, 20))); got != 32 {
		t.Errorf("len(ZBase32(20 bytes)) = %d, want 32", got)
	}
}

func TestDearmor(t *testing.T) {
	armored := testKey(t)
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(blk.Body)

	withHeader := strings.Replace(string(armored), "-----\n\n", "-----\nComment: a header\nVersion: x\n\n", 1)
	crlf := strings.ReplaceAll(string(armored), "\n", "\r\n")
	badCRC := strings.Replace(string(armored), "=vDRI", "=AAAA", 1)
	tests := []struct {
		name    string
		in      []byte
		want    []byte
		wantErr error
	}{
		{"armored", armored, want, nil},
		{"armored with headers", []byte(withHeader), want, nil},
		{"CRLF", []byte(crlf), want, nil},
		{"binary passes through", want, want, nil},
		{"checksum mismatch", []byte(badCRC), nil, ErrChecksum},
		{"not a key", []byte("hello"), nil, ErrArmor},
		{"no end line", armored[:len(armored)-40], nil, ErrArmor},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Dearmor(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Dearmor() error = %v, want %v", err, tt.wantErr)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("Dearmor() = %d bytes, want %d bytes equal to go-crypto's decoding", len(got), len(tt.want))
			}
		})
	}
}

func TestWKDEndpoints(t *testing.T) {
	s, _ := newTest(t, Options{})
	bin, err := Dearmor(testKey(t))
	if err != nil {
		t.Fatal(err)
	}
	hash := WKDHash("security@example.test")
	other := WKDHash("nobody@example.test")
	tests := []struct {
		name     string
		target   string
		wantCode int
		wantBody []byte // nil: not checked
		wantType string
	}{
		{"direct", "/.well-known/openpgpkey/hu/" + hash, 200, bin, "application/octet-stream"},
		{"direct with l", "/.well-known/openpgpkey/hu/" + hash + "?l=security", 200, bin, "application/octet-stream"},
		{"direct with l in other case", "/.well-known/openpgpkey/hu/" + hash + "?l=Security", 200, bin, "application/octet-stream"},
		{"direct with a wrong l", "/.well-known/openpgpkey/hu/" + hash + "?l=alice", 404, nil, ""},
		{"advanced", "/.well-known/openpgpkey/example.test/hu/" + hash, 200, bin, "application/octet-stream"},
		{"advanced, domain in capitals", "/.well-known/openpgpkey/EXAMPLE.test/hu/" + hash + "?l=security", 200, bin, "application/octet-stream"},
		{"advanced, other domain", "/.well-known/openpgpkey/example.org/hu/" + hash, 404, nil, ""},
		{"unknown address", "/.well-known/openpgpkey/hu/" + other, 404, nil, ""},
		{"short hash", "/.well-known/openpgpkey/hu/abc", 404, nil, ""},
		{"policy", "/.well-known/openpgpkey/policy", 200, []byte{}, "text/plain; charset=utf-8"},
		{"advanced policy", "/.well-known/openpgpkey/example.test/policy", 200, []byte{}, "text/plain; charset=utf-8"},
		{"advanced policy, other domain", "/.well-known/openpgpkey/example.org/policy", 404, nil, ""},
		{"submission address is not offered", "/.well-known/openpgpkey/submission-address", 404, nil, ""},
		{"directory", "/.well-known/openpgpkey/", 404, nil, ""},
		{"extra segment", "/.well-known/openpgpkey/example.test/hu/" + hash + "/x", 404, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := get(t, s, tt.target)
			if r.code != tt.wantCode {
				t.Fatalf("GET %s = %d, want %d", tt.target, r.code, tt.wantCode)
			}
			if tt.wantBody != nil && !bytes.Equal([]byte(r.body), tt.wantBody) {
				t.Errorf("GET %s body = %d bytes, want %d", tt.target, len(r.body), len(tt.wantBody))
			}
			if tt.wantType != "" {
				if got := r.header.Get("Content-Type"); got != tt.wantType {
					t.Errorf("GET %s Content-Type = %q, want %q", tt.target, got, tt.wantType)
				}
				if got := r.header.Get("Access-Control-Allow-Origin"); got != "*" {
					t.Errorf("GET %s Access-Control-Allow-Origin = %q, want *", tt.target, got)
				}
			}
		})
	}
}

func TestWKDBadKeyIsLeftOut(t *testing.T) {
	s, logs := newTest(t, Options{Keys: map[string][]byte{
		"security@example.test": []byte("not a key"),
		"no-at-sign":            testKey(t),
	}})
	if r := get(t, s, "/.well-known/openpgpkey/hu/"+WKDHash("security@example.test")); r.code != http.StatusNotFound {
		t.Errorf("bad key served: %d", r.code)
	}
	if !strings.Contains(logs.String(), "does not decode") || !strings.Contains(logs.String(), "not an address") {
		t.Errorf("bad keys not logged:\n%s", logs)
	}
}
