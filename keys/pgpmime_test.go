package keys

import (
	"bytes"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
)

func TestToCRLF(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"a\nb\n", "a\r\nb\r\n"},
		{"a\r\nb\n", "a\r\nb\r\n"},
		{"\n\n", "\r\n\r\n"},
		{"a\rb", "a\rb"},
	}
	for _, tt := range tests {
		if got := string(toCRLF([]byte(tt.in))); got != tt.want {
			t.Errorf("toCRLF(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSplitMultipart(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		parts    []string
		preamble string
		epilogue string
		err      error
	}{
		{"simple", "--b\r\nA\r\n--b\r\nB\r\n--b--\r\n", []string{"A", "B"}, "", "", nil},
		{"preamble and epilogue", "pre\r\n--b\r\nA\r\n--b--\r\nepi\r\n", []string{"A"}, "pre", "epi\r\n", nil},
		{"transport padding", "--b  \r\nA\r\n--b\t\r\nB\r\n--b-- \r\n", []string{"A", "B"}, "", "", nil},
		{"empty part", "--b\r\n--b\r\nB\r\n--b--", []string{"", "B"}, "", "", nil},
		{"part keeps its trailing CRLF but one", "--b\r\nA\r\n\r\n--b--", []string{"A\r\n"}, "", "", nil},
		{"boundary prefix is not a delimiter", "--b\r\n--bb\r\n--b--", []string{"--bb"}, "", "", nil},
		{"no closing delimiter", "--b\r\nA\r\n--b\r\n", nil, "", "", ErrMalformed},
		{"no delimiter at all", "text", nil, "", "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp, err := splitMultipart([]byte(tt.body), "b")
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range mp.parts {
				got = append(got, string(p))
			}
			if len(got) != len(tt.parts) {
				t.Fatalf("parts = %q, want %q", got, tt.parts)
			}
			for i := range got {
				if got[i] != tt.parts[i] {
					t.Fatalf("parts = %q, want %q", got, tt.parts)
				}
			}
			if string(mp.preamble) != tt.preamble || string(mp.epilogue) != tt.epilogue {
				t.Errorf("preamble, epilogue = %q, %q", mp.preamble, mp.epilogue)
			}
		})
	}
}

// TestScanLenient: the classifying scan reads a truncated multipart (no
// closing delimiter), so a cut-off Johnny layout is still "partially
// signed", while verification itself demands the closing delimiter.
func TestScanLenient(t *testing.T) {
	k := detKeys(t)
	signed, err := Sign(testOuter(t, "s"), []byte(innerText), k.member, fixedOpts(1))
	if err != nil {
		t.Fatal(err)
	}
	msg := mixed("mixed", "t", []byte("Content-Type: text/plain\r\n\r\nfired"), asEntity(t, signed))
	msg = msg[:bytes.LastIndex(msg, []byte("--t--"))]
	if _, err := Verify(msg, NewKeyring(k.member), fixedOpts(0)); !errors.Is(err, ErrPartiallySigned) {
		t.Errorf("truncated Johnny layout: err = %v, want ErrPartiallySigned", err)
	}
	if _, err := Verify(signed[:bytes.LastIndex(signed, []byte("--embargo-test-boundary--"))], NewKeyring(k.member), fixedOpts(0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated multipart/signed: err = %v, want ErrMalformed", err)
	}
	if _, err := Verify(plainMessage([]byte("--x\nno multipart\n")), nil, fixedOpts(0)); !errors.Is(err, ErrNotSigned) {
		t.Errorf("plain: err = %v, want ErrNotSigned", err)
	}
}

func TestParseEntityRefusesDuplicates(t *testing.T) {
	_, err := parseEntity([]byte("Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\nx"))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("duplicate Content-Type: err = %v", err)
	}
}

func TestFindArmor(t *testing.T) {
	data := []byte("x\n-----BEGIN PGP MESSAGE-----\nbroken\n-----BEGIN PGP MESSAGE-----\n\nAA==\n-----END PGP MESSAGE-----\ntail\n")
	spans := findArmor(data)
	if len(spans) != 1 || !bytes.HasPrefix(data[spans[0].start:], []byte("-----BEGIN PGP MESSAGE-----\n\nAA")) {
		t.Fatalf("spans = %+v", spans)
	}
	if _, ok, extra := wholeArmor(data, armorMessage); !ok || !extra {
		t.Error("an abandoned BEGIN before the block must count as extra text")
	}
}

func TestSplitPackets(t *testing.T) {
	// Old format (tag 1, 1-octet length), new format with partial lengths.
	in := []byte{0x84, 0x02, 0xAA, 0xBB, 0xD2, 0xE1, 0x01, 0x02, 0x01, 0x03}
	ps, err := splitPackets(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].tag != 1 || !bytes.Equal(ps[0].body, []byte{0xAA, 0xBB}) ||
		ps[1].tag != 18 || !bytes.Equal(ps[1].body, []byte{0x01, 0x02, 0x03}) {
		t.Fatalf("packets = %+v", ps)
	}
	for _, bad := range [][]byte{{0x00}, {0x84, 0x05, 0x01}, {0xD2, 0xFF, 0x00}, {0xD2, 0xE1, 0x01}} {
		if _, err := splitPackets(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("splitPackets(% x) = %v, want ErrMalformed", bad, err)
		}
	}
}

// TestConcurrentUse: keys and keyrings are shared by goroutines (the
// daemon signs, encrypts, verifies and decrypts in parallel); run with
// -race.
func TestConcurrentUse(t *testing.T) {
	k := detKeys(t)
	trusted := NewKeyring(k.member, k.list)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := Options{Now: fixedOpts(0).Now}
			s, err := Sign(testOuter(t, "c"), []byte(innerText), k.list, o)
			if err != nil {
				errs <- err
				return
			}
			if _, err := Verify(s, trusted, o); err != nil {
				errs <- err
			}
			e, err := Encrypt(testOuter(t, "c"), []byte(innerText), k.member, k.list, o)
			if err != nil {
				errs <- err
				return
			}
			d, err := Decrypt(e, k.member, trusted, o)
			switch {
			case err != nil:
				errs <- err
			case d.Signature == nil:
				errs <- d.SignatureErr
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestHeaderBombBounded (docs/threat-model.md C1): a part header of tiny
// fields filling a 4 MiB message, beside other parts or as the decrypted
// entity, is refused before textproto.ReadHeader keeps its 800 000 fields
// (about 370 MiB); a header at the limits is read.
func TestHeaderBombBounded(t *testing.T) {
	k := detKeys(t)
	bomb := []byte(strings.Repeat("X:1\r\n", 800_000) + "Content-Type: text/plain\r\n\r\nx\r\n")
	if _, err := parseEntity(bomb); !errors.Is(err, ErrMalformed) {
		t.Fatalf("parseEntity(800 000 fields) = %v, want ErrMalformed", err)
	}
	big := []byte("X-Big: " + strings.Repeat("a", maxHeaderBytes) + "\r\n\r\nx")
	if _, err := parseEntity(big); !errors.Is(err, ErrMalformed) {
		t.Fatalf("parseEntity(a header over %d bytes) = %v, want ErrMalformed", maxHeaderBytes, err)
	}
	if _, err := parseEntity([]byte(strings.Repeat("X-A: b\r\n", maxHeaderFields) + "\r\nx")); err != nil {
		t.Fatalf("parseEntity(%d fields) = %v", maxHeaderFields, err)
	}
	plain := mixed("mixed", "b", []byte("Content-Type: text/plain\r\n\r\nhello"), bomb)
	// Encrypt refuses to seal such an entity: go-crypto encrypts it, as
	// anyone may to the list key.
	var bin bytes.Buffer
	w, err := openpgp.Encrypt(&bin, []*openpgp.Entity{k.list.e}, nil, &openpgp.FileHints{IsBinary: true}, fixedOpts(0).config())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bomb)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	enc := encryptedMIME(armorMsg(t, bin.Bytes()), "b")
	for name, msg := range map[string][]byte{"beside a text part": plain, "encrypted": enc} {
		var err error
		alloc := allocatedBytes(func() { _, err = Open(msg, k.list, nil, fixedOpts(0)) })
		t.Logf("%s: %d KiB message, %d MiB allocated, %v", name, len(msg)>>10, alloc>>20, err)
		if alloc > 64<<20 {
			t.Errorf("%s: Open allocated %d MiB for a %d KiB message: the header was parsed", name, alloc>>20, len(msg)>>10)
		}
	}
}

func allocatedBytes(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}
