package keys

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

const benchRecipients = 100

var (
	benchOnce   sync.Once
	benchRecips []*Key
	benchNotice []byte
)

// benchSetup makes 100 recipient keys and a 20 KB notice (a quoted-printable
// text/plain entity, as the daemon sends).
func benchSetup(b *testing.B) (list *Key, recips []*Key, notice []byte) {
	b.Helper()
	k := detKeys(b)
	benchOnce.Do(func() {
		for i := 0; i < benchRecipients; i++ {
			r, err := GenerateListKey(fmt.Sprintf("Distributor %d", i), fmt.Sprintf("d%d@dist.test", i),
				Options{Now: func() time.Time { return fixedNow.Add(-time.Hour) }, Rand: detRand(byte(100 + i))})
			if err != nil {
				panic(err)
			}
			benchRecips = append(benchRecips, r)
		}
		var body strings.Builder
		body.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
		line := "Embargoed: CVE-2025-0001 heap overflow in libfoo's parser; fix in 1.2.3.\r\n"
		for body.Len() < 20<<10 {
			body.WriteString(line)
		}
		benchNotice = []byte(body.String())
	})
	return k.list, benchRecips, benchNotice
}

func benchOpts() Options { return Options{Now: func() time.Time { return fixedNow }} }

// BenchmarkEncrypt100 encrypts one 20 KB notice for 100 recipients, one
// message per recipient, each signed inside by the list key: what a
// distributors@ notice costs. ns/copy is the per-recipient time.
func BenchmarkEncrypt100(b *testing.B) {
	list, recips, notice := benchSetup(b)
	outer := testOuter(b, "[private] encrypted notice")
	o := benchOpts()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, r := range recips {
			if _, err := Encrypt(outer, notice, r, list, o); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recips)), "ns/copy")
}

// BenchmarkEncryptShared100 is the reference: one OpenPGP message to all 100
// recipients at once (one SEIPD, 100 PKESKs), signed; embargo does not do
// this (docs/dependencies.md §3.3), it only bounds the cost of per-copy encryption.
func BenchmarkEncryptShared100(b *testing.B) {
	list, recips, notice := benchSetup(b)
	to := make([]*openpgp.Entity, len(recips))
	for i, r := range recips {
		to[i] = r.e
	}
	cfg := benchOpts().config()
	cfg.DefaultCipher = packet.CipherAES256
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var out bytes.Buffer
		w, err := openpgp.Encrypt(&out, to, list.e, &openpgp.FileHints{IsBinary: true}, cfg)
		if err != nil {
			b.Fatal(err)
		}
		w.Write(notice)
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncryptRaw100 is the reference for BenchmarkEncrypt100: go-crypto's
// own openpgp.Encrypt, signed, AES-256, no compression, binary (no armor and
// no MIME), to the same 100 keys one at a time with the same 20 KB notice.
// ns/copy here against ns/copy there is what embargo's PGP/MIME adds.
func BenchmarkEncryptRaw100(b *testing.B) {
	list, recips, notice := benchSetup(b)
	cfg := benchOpts().config()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, r := range recips {
			var out bytes.Buffer
			w, err := openpgp.Encrypt(&out, []*openpgp.Entity{r.e}, list.e, &openpgp.FileHints{IsBinary: true}, cfg)
			if err != nil {
				b.Fatal(err)
			}
			w.Write(notice)
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recips)), "ns/copy")
}

// BenchmarkSHA256Notice is the floor: hashing the same 20 KB once.
func BenchmarkSHA256Notice(b *testing.B) {
	_, _, notice := benchSetup(b)
	b.SetBytes(int64(len(notice)))
	for i := 0; i < b.N; i++ {
		sha256.Sum256(notice)
	}
}

// BenchmarkDecrypt decrypts and verifies one signed 20 KB notice.
func BenchmarkDecrypt(b *testing.B) {
	list, recips, notice := benchSetup(b)
	msg, err := Encrypt(testOuter(b, "x"), notice, recips[0], list, benchOpts())
	if err != nil {
		b.Fatal(err)
	}
	trusted := NewKeyring(list)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := Decrypt(msg, recips[0], trusted, benchOpts())
		if err != nil || d.Signature == nil {
			b.Fatal(err, d.SignatureErr)
		}
	}
}

// BenchmarkVerify verifies one PGP/MIME signed 20 KB announcement.
func BenchmarkVerify(b *testing.B) {
	list, _, notice := benchSetup(b)
	msg, err := Sign(testOuter(b, "x"), notice, list, benchOpts())
	if err != nil {
		b.Fatal(err)
	}
	trusted := NewKeyring(list)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Verify(msg, trusted, benchOpts()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBomb measures how fast a 1 GiB decompression bomb is refused
// (docs/threat-model.md C5: "fail fast"; speed is measured here, not asserted).
func BenchmarkBomb(b *testing.B) {
	k := detKeys(b)
	msg := bombMessage(b, k.member)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Decrypt(msg, k.member, nil, fixedOpts(0)); err == nil {
			b.Fatal("bomb accepted")
		}
	}
}
