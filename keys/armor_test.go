package keys

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// goCryptoArmor is the reference: go-crypto's encoder, LF made CRLF.
func goCryptoArmor(t *testing.T, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, armorMessage, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b.Bytes(), []byte("\n"), []byte("\r\n"))
}

func TestArmorWriterMatchesGoCrypto(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 4095, 8192, 8193, 100_000}
	for range 40 {
		sizes = append(sizes, rng.IntN(3000))
	}
	for _, n := range sizes {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		want := goCryptoArmor(t, data)
		// Written in random pieces, as the packet writers do.
		var got bytes.Buffer
		w := newArmorWriter(&got, armorMessage)
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 1+rng.IntN(200))
			if m, err := w.Write(rest[:k]); m != k || err != nil {
				t.Fatalf("Write = %d, %v", m, err)
			}
			rest = rest[k:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("%d bytes: armor differs from go-crypto's\ngot  %q\nwant %q", n, got.Bytes(), want)
		}
		// And it reads back, checksum checked.
		blk, err := armor.Decode(bytes.NewReader(got.Bytes()))
		if err != nil {
			t.Fatalf("%d bytes: armor.Decode: %v", n, err)
		}
		back := new(bytes.Buffer)
		if _, err := back.ReadFrom(blk.Body); err != nil || !bytes.Equal(back.Bytes(), data) {
			t.Fatalf("%d bytes: read back %d bytes, %v", n, back.Len(), err)
		}
	}
}

// The table-driven CRC-24 is RFC 4880 §6.1's: the catalogued check value
// of CRC-24/OPENPGP over "123456789" (go-crypto's reader ignores the
// checksum, so matching its encoder is not proof enough on its own).
func TestCRC24CheckValue(t *testing.T) {
	if got := crc24Update(crc24Init, []byte("123456789")); got != 0x21cf02 {
		t.Errorf("CRC-24 of 123456789 = %06x, want 21cf02", got)
	}
}

// crlfViolation agrees with a byte-by-byte reading on random text, chunked
// at random.
func TestCRLFViolation(t *testing.T) {
	naive := func(b []byte) int {
		for i, c := range b {
			switch {
			case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
				return i
			case c == '\n' && (i == 0 || b[i-1] != '\r'):
				return i
			}
		}
		return -1
	}
	rng := rand.New(rand.NewPCG(3, 4))
	tokens := []string{"x", "y", "\r\n", "\r\n", "\r\n", "\r", "\n"}
	for range 20000 {
		var b []byte
		for range rng.IntN(20) {
			b = append(b, tokens[rng.IntN(len(tokens))]...)
		}
		want := naive(b)
		// Chunked: the violation found first, at its offset in b.
		got, prevCR := -1, false
		for off := 0; off < len(b) && got < 0; {
			k := min(len(b)-off, 1+rng.IntN(8))
			if i := crlfViolation(b[off:off+k], prevCR); i >= 0 {
				got = off + i
				break
			}
			prevCR = b[off+k-1] == '\r'
			off += k
		}
		if got < 0 && prevCR {
			got = len(b) - 1 // a CR at the very end
		}
		// A bare CR that ends a chunk is found at the next byte.
		if got != want && !(want >= 0 && b[want] == '\r' && got == want+1) {
			t.Fatalf("%q: violation at %d, want %d", b, got, want)
		}
	}
}
