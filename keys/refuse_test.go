package keys

import (
	"bytes"
	"compress/flate"
	"crypto/aes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// refusalSentinels are the reasons the refusal table tells apart: each case
// must match its own and no other.
var refusalSentinels = []error{
	ErrNotSigned, ErrPartiallySigned, ErrForwarded, ErrMultipleSignatures, ErrUnknownSigner,
	ErrWeakHash, ErrBadSignature, ErrSignatureExpired, ErrKeyExpired, ErrKeyRevoked,
	ErrWeakAlgorithm, ErrSHA1Binding, ErrNotEncrypted, ErrPartiallyEncrypted, ErrNoIntegrity,
	ErrTampered, ErrTooLarge, ErrWrongKey, ErrMalformed, ErrUnsupportedProtocol,
}

// refusalOp is what a refusal case asks of the message.
type refusalOp int

const (
	refuseVerify refusalOp = iota
	refuseDecrypt
)

// refusalCase is one row of TestRefusals: a bad message, the instant it is
// judged at, and the one reason it must be refused with.
type refusalCase struct {
	name string
	op   refusalOp
	msg  []byte
	now  time.Time
	want error
}

// refusalFixture holds the keys and messages the refusal table is built
// from: gpg-made member keys, a list key, and untouched signed and encrypted
// messages to alter.
type refusalFixture struct {
	g                                          *gpgHome
	list                                       *Key
	trusted                                    *Keyring
	now                                        time.Time
	inner                                      []byte
	member, second, stranger, short, rsa, weak string
	revokedMsg                                 []byte
	good, goodCT, goodEnc, ours, toStranger    []byte
}

func newRefusalFixture(t *testing.T) *refusalFixture {
	g := newGPG(t)
	list, err := GenerateListKey("Security", "security@example.org", Options{})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := list.ArmoredPublic()
	g.importKey(pub)
	f := &refusalFixture{g: g, list: list, inner: []byte(innerText)}

	f.member = g.edKey("Member <m@src.test>", "1y")
	f.second = g.edKey("Second <second@src.test>", "1y")
	f.stranger = g.edKey("Stranger <x@evil.test>", "1y")
	f.short = g.edKey("Short <short@src.test>", "1d")
	f.rsa = g.genKey("Rsa <rsa@src.test>", "rsa3072", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", f.rsa, "rsa3072", "encr", "1y")
	f.weak = g.genKey("Weak <weak@src.test>", "rsa1024", "sign,cert", "1y")
	g.must(nil, "--quick-add-key", f.weak, "rsa1024", "encr", "1y")
	revoked := g.edKey("Revoked <revoked@src.test>", "1y")

	f.good = f.sign(f.member, "--digest-algo", "SHA256")
	f.revokedMsg = f.sign(revoked)
	g.importKey(revocationCert(t, g, revoked))

	f.now = time.Now() // after the keys were made: a key is not valid before its creation
	f.trusted = NewKeyring(g.publicKey(f.member), g.publicKey(f.second), g.publicKey(f.short),
		g.publicKey(f.rsa), g.publicKey(f.weak), g.publicKey(revoked))
	if k, _ := f.trusted.Lookup(revoked); k.Check(f.now) == nil {
		t.Fatal("setup: revoked key not revoked")
	}

	f.goodCT = g.output(f.inner, "--armor", "--recipient", list.Fingerprint(), "--encrypt")
	f.goodEnc = encryptedMIME(f.goodCT, "eb")
	f.ours, err = Encrypt(testOuter(t, "x"), f.inner, list, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.toStranger = encryptedMIME(g.output(f.inner, "--armor", "--recipient", f.stranger, "--encrypt"), "eb")
	return f
}

// sign is the inner text in a PGP/MIME message signed by fpr.
func (f *refusalFixture) sign(fpr string, extra ...string) []byte {
	return signedMIME(f.inner, f.g.detachSign(f.inner, fpr, extra...), "sb")
}

// clear is text clear-signed by fpr.
func (f *refusalFixture) clear(fpr string, text string, extra ...string) []byte {
	return f.g.output([]byte(text), append([]string{"--local-user", fpr}, append(extra, "--clearsign")...)...)
}

func htmlPart(s string) []byte { return []byte("Content-Type: text/html\r\n\r\n" + s) }
func textPart(s string) []byte { return []byte("Content-Type: text/plain\r\n\r\n" + s) }
func rfc822Part(msg []byte) []byte {
	return append([]byte("Content-Type: message/rfc822\r\n\r\n"), msg...)
}

// decryptCases: ciphertexts that must not decrypt (docs/threat-model.md D1, D2, D9, C5).
func (f *refusalFixture) decryptCases(t *testing.T) []refusalCase {
	g, list, inner, now, goodCT, goodEnc, ours := f.g, f.list, f.inner, f.now, f.goodCT, f.goodEnc, f.ours
	return []refusalCase{
		{"tampered gpg ciphertext (last byte)", refuseDecrypt, encryptedMIME(flipByte(t, goodCT, -1), "eb"), now, ErrTampered},
		{"tampered ciphertext (22nd byte from the end)", refuseDecrypt, flipMessage(t, ours, -22), now, ErrTampered},
		{"tampered ciphertext (middle)", refuseDecrypt, flipMessage(t, ours, -200), now, ErrTampered},
		{"no integrity protection (SED, tag 9)", refuseDecrypt, sedMessage(t, list, inner), now, ErrNoIntegrity},
		{"decompression bomb", refuseDecrypt, bombMessage(t, list), now, ErrTooLarge},
		{"EFAIL: html, ciphertext, html", refuseDecrypt, mixed("mixed", "efail", htmlPart(`<img src="http://evil.test/`), asEntity(t, goodEnc), htmlPart(`">`)), now, ErrPartiallyEncrypted},
		{"EFAIL: ciphertext as a bare part", refuseDecrypt, mixed("mixed", "efail", textPart("see below"), append([]byte("Content-Type: application/octet-stream\r\n\r\n"), goodCT...)), now, ErrPartiallyEncrypted},
		{"inline ciphertext with text around it", refuseDecrypt, plainMessage(append(append([]byte("Hello\n"), goodCT...), "\nbye\n"...)), now, ErrPartiallyEncrypted},
		{"multipart/encrypted with a third part", refuseDecrypt, threeParts(t, goodEnc), now, ErrPartiallyEncrypted},
		{"plain text", refuseDecrypt, plainMessage([]byte("hello\n")), now, ErrNotEncrypted},
		{"signed-only OpenPGP message", refuseDecrypt, plainMessage(g.output(inner, "--armor", "--local-user", f.member, "--sign")), now, ErrNotEncrypted},
		{"encrypted to another key", refuseDecrypt, f.toStranger, now, ErrWrongKey},
		{"S/MIME", refuseDecrypt, []byte("Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIIB\r\n"), now, ErrNotEncrypted},
		{"truncated ciphertext", refuseDecrypt, encryptedMIME(truncate(t, goodCT, 40), "eb"), now, ErrMalformed},
	}
}

// verifyCases: messages whose signature must not count (docs/threat-model.md D4, E2, E4).
func (f *refusalFixture) verifyCases(t *testing.T) []refusalCase {
	now, good, member, second := f.now, f.good, f.member, f.second
	return []refusalCase{
		{"SHA-1 signature (RSA-3072)", refuseVerify, f.sign(f.rsa, "--digest-algo", "SHA1"), now, ErrWeakHash},
		{"SHA-1 clear-signed", refuseVerify, plainMessage(f.clear(f.rsa, "/ack\n", "--digest-algo", "SHA1")), now, ErrWeakHash},
		{"expired key", refuseVerify, f.sign(f.short), now.Add(72 * time.Hour), ErrKeyExpired},
		{"revoked key", refuseVerify, f.revokedMsg, now, ErrKeyRevoked},
		{"unknown signer", refuseVerify, f.sign(f.stranger), now, ErrUnknownSigner},
		{"two signatures", refuseVerify, f.sign(member, "--local-user", second), now, ErrMultipleSignatures},
		{"two signatures, clear-signed", refuseVerify, plainMessage(f.clear(member, "/ack\n", "--local-user", second)), now, ErrMultipleSignatures},
		{"RSA-1024 signer", refuseVerify, f.sign(f.weak), now, ErrWeakAlgorithm},
		{"signed content altered", refuseVerify, bytes.Replace(good, []byte("CVE-2025-0001"), []byte("CVE-2025-0002"), 1), now, ErrBadSignature},
		{"Johnny: unsigned text, then signed part", refuseVerify, mixed("mixed", "j1", textPart("You are fired.\r\n"), asEntity(t, good)), now, ErrPartiallySigned},
		{"Johnny: signed part, then appended text", refuseVerify, mixed("mixed", "j2", asEntity(t, good), textPart("P.S. /disclose now\r\n")), now, ErrPartiallySigned},
		{"Johnny: signed part hidden in alternative", refuseVerify, mixed("alternative", "j3", textPart("/disclose now\r\n"), asEntity(t, good)), now, ErrPartiallySigned},
		{"clear-signed, then appended text", refuseVerify, plainMessage(append(f.clear(member, "/ack\n"), "/disclose now\n"...)), now, ErrPartiallySigned},
		{"text, then clear-signed", refuseVerify, plainMessage(append([]byte("/disclose now\n\n"), f.clear(member, "/ack\n")...)), now, ErrPartiallySigned},
		{"clear-signed text beside html", refuseVerify, mixed("alternative", "j4", append([]byte("Content-Type: text/plain\r\n\r\n"), toCRLF(f.clear(member, "/ack\n"))...), htmlPart("<p>/disclose now</p>")), now, ErrPartiallySigned},
		{"multipart/signed with a third part", refuseVerify, threeParts(t, good), now, ErrPartiallySigned},
		{"signed part forwarded as message/rfc822", refuseVerify, mixed("mixed", "f1", textPart("FYI\r\n"), rfc822Part(good)), now, ErrForwarded},
		{"top-level message/rfc822", refuseVerify, append([]byte("Content-Type: message/rfc822\r\n\r\n"), good...), now, ErrForwarded},
		{"unsigned", refuseVerify, plainMessage([]byte("/ack\n")), now, ErrNotSigned},
		{"S/MIME signed", refuseVerify, bytes.Replace(good, []byte(`protocol="application/pgp-signature"`), []byte(`protocol="application/pkcs7-signature"`), 1), now, ErrUnsupportedProtocol},
		{"unescaped dash line in clear-signed text", refuseVerify, plainMessage(unescapeDash(f.clear(member, "-x\n"))), now, ErrMalformed},
	}
}

// checkRefusal: the case is refused for its own reason, hands back no
// plaintext and no signature, and Open refuses it the same way.
func checkRefusal(t *testing.T, f *refusalFixture, tt refusalCase) {
	at := tt.now
	o := Options{Now: func() time.Time { return at }}
	var err error
	switch tt.op {
	case refuseVerify:
		var v *Verified
		v, err = Verify(tt.msg, f.trusted, o)
		if v != nil {
			t.Fatalf("Verify counted a signature: %+v", v)
		}
	case refuseDecrypt:
		var d *Decrypted
		d, err = Decrypt(tt.msg, f.list, f.trusted, o)
		if d != nil {
			t.Fatalf("Decrypt returned plaintext: %q", d.Inner)
		}
		// IsEncrypted agrees: well-formed ciphertexts are
		// "encrypted" even when they do not decrypt.
		if !errors.Is(err, ErrMalformed) && IsEncrypted(tt.msg) != errorsIsAny(err, ErrTampered, ErrNoIntegrity, ErrTooLarge, ErrWrongKey) {
			t.Errorf("IsEncrypted = %v for %v", IsEncrypted(tt.msg), err)
		}
	}
	mustErrIs(t, tt.name, err, tt.want, refusalSentinels)
	t.Logf("refused: %v", err)
	checkOpenRefuses(t, tt.name, tt.msg, f.list, f.trusted, o, tt.op == refuseDecrypt, tt.want)
}

// TestRefusals is the negative table: each bad message or key is refused,
// each with its own reason.
func TestRefusals(t *testing.T) {
	f := newRefusalFixture(t)
	for _, tt := range append(f.decryptCases(t), f.verifyCases(t)...) {
		t.Run(tt.name, func(t *testing.T) { checkRefusal(t, f, tt) })
	}

	// The control case: the untouched fixtures are accepted.
	if _, err := Verify(f.good, f.trusted, Options{}); err != nil {
		t.Errorf("good signed message: %v", err)
	}
	if _, err := Decrypt(f.goodEnc, f.list, f.trusted, Options{}); err != nil {
		t.Errorf("good encrypted message: %v", err)
	}

	t.Run("RSA-1024 key at load", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "weak.asc"), f.g.export("--armor", "--export", f.weak), 0o644); err != nil {
			t.Fatal(err)
		}
		kr, ps, err := LoadPinned(dir, []Pin{{"weak@src.test", f.weak}}, f.now)
		if err != nil || kr.Len() != 0 || len(ps) != 1 {
			t.Fatalf("LoadPinned = %d keys, %v, %v", kr.Len(), ps, err)
		}
		mustErrIs(t, "weak key", ps[0].Err, ErrWeakAlgorithm, refusalSentinels)
	})
}

// TestBombBoundedMemory: a compressed literal of 1 GiB of zeros in about a
// megabyte fails with ErrTooLarge after reading no more than the cap, with
// bounded allocation (docs/threat-model.md C5). Speed is measured by BenchmarkBomb, not
// asserted.
func TestBombBoundedMemory(t *testing.T) {
	k := detKeys(t)
	msg := bombMessage(t, k.member)
	if len(msg) > 4<<20 {
		t.Fatalf("bomb is %d bytes; want a few MB", len(msg))
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := Decrypt(msg, k.member, nil, fixedOpts(0))
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decrypt(bomb) = %v, want ErrTooLarge", err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("bomb: %d bytes in, refused after %v, %d MiB allocated", len(msg), elapsed, alloc>>20)
	if alloc > 256<<20 {
		t.Errorf("allocated %d MiB decrypting a bomb; want it bounded by the 20 MiB cap", alloc>>20)
	}
	// A smaller cap is honoured too.
	o := fixedOpts(0)
	o.MaxDecompressed = 1 << 20
	if _, err := Decrypt(msg, k.member, nil, o); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decrypt(bomb, 1 MiB cap) = %v", err)
	}
}

// ---- fixtures built by code (docs/threat-model.md §2.1) ----

// payloadOf returns the binary OpenPGP message inside msg.
func payloadOf(t testing.TB, msg []byte) []byte {
	t.Helper()
	e, err := parseEntity(toCRLF(msg))
	if err != nil {
		t.Fatal(err)
	}
	_, block, _, err := encryptedPayload(e)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := dearmorMessage(block)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func armorMsg(t testing.TB, bin []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, armorMessage, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bin)
	w.Close()
	return b.Bytes()
}

// flipByte flips one bit of the binary message in an armored block, at
// offset pos from the end (negative).
func flipByte(t testing.TB, armored []byte, pos int) []byte {
	t.Helper()
	bin, err := dearmorMessage(armored)
	if err != nil {
		t.Fatal(err)
	}
	bin = append([]byte(nil), bin...)
	bin[len(bin)+pos] ^= 0x01
	return armorMsg(t, bin)
}

func flipMessage(t testing.TB, msg []byte, pos int) []byte {
	t.Helper()
	bin := append([]byte(nil), payloadOf(t, msg)...)
	bin[len(bin)+pos] ^= 0x01
	return encryptedMIME(armorMsg(t, bin), "eb")
}

func truncate(t testing.TB, armored []byte, n int) []byte {
	t.Helper()
	bin, err := dearmorMessage(armored)
	if err != nil {
		t.Fatal(err)
	}
	return armorMsg(t, bin[:len(bin)-n])
}

// threeParts appends a third part to a two-part multipart message.
func threeParts(t testing.TB, msg []byte) []byte {
	t.Helper()
	e, err := parseEntity(msg)
	if err != nil {
		t.Fatal(err)
	}
	b := e.params["boundary"]
	closing := []byte("\r\n--" + b + "--")
	i := bytes.LastIndex(msg, closing)
	if i < 0 {
		t.Fatal("no closing delimiter")
	}
	out := append([]byte(nil), msg[:i]...)
	out = append(out, "\r\n--"+b+"\r\nContent-Type: text/plain\r\n\r\n/disclose now"...)
	return append(out, msg[i:]...)
}

// unescapeDash removes the dash escape from the "- -x" line of clear-signed
// text.
func unescapeDash(b []byte) []byte {
	return bytes.Replace(b, []byte("\n- -x"), []byte("\n-x"), 1)
}

// newHeader writes a new-format packet header with a five-octet length
// (RFC 4880 §4.2.2.3).
func newHeader(w *bytes.Buffer, tag int, n int) {
	w.WriteByte(0xc0 | byte(tag))
	w.WriteByte(0xff)
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(n))
	w.Write(l[:])
}

// sedMessage builds an inline message with a PKESK for to and a tag-9
// Symmetrically Encrypted Data packet (no MDC, RFC 4880 §5.7) holding a
// literal packet: what EFAIL's CFB gadgets need.
func sedMessage(t testing.TB, to *Key, plaintext []byte) []byte {
	t.Helper()
	cfg := &packet.Config{Rand: detRand(9)}
	key := make([]byte, 32)
	io.ReadFull(cfg.Rand, key)
	var bin bytes.Buffer
	ek, ok := to.e.EncryptionKey(to.e.PrimaryKey.CreationTime.Add(time.Minute))
	if !ok {
		t.Fatal("no encryption key")
	}
	if err := packet.SerializeEncryptedKeyAEAD(&bin, ek.PublicKey, packet.CipherAES256, false, key, cfg); err != nil {
		t.Fatal(err)
	}
	var lit bytes.Buffer
	w, err := packet.SerializeLiteral(nopCloser{&lit}, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plaintext)
	w.Close()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, block.BlockSize())
	io.ReadFull(cfg.Rand, iv)
	stream, prefix := packet.NewOCFBEncrypter(block, iv, packet.OCFBResync)
	body := append([]byte(nil), prefix...)
	ct := make([]byte, lit.Len())
	stream.XORKeyStream(ct, lit.Bytes())
	body = append(body, ct...)
	newHeader(&bin, tagSED, len(body))
	bin.Write(body)
	return plainMessage(armorMsg(t, bin.Bytes()))
}

// bombMessage builds a PGP/MIME message to `to` whose SEIPD holds a ZIP
// (raw deflate, RFC 1951) compressed packet declaring a 1 GiB literal of
// zeros, in about a megabyte. The deflate stream is made without
// compressing 1 GiB: one flushed block of 1 MiB of zeros decodes the same
// wherever it stands, so it is repeated 1024 times.
func bombMessage(t testing.TB, to *Key) []byte {
	t.Helper()
	const total = 1 << 30
	var litHdr bytes.Buffer
	newHeader(&litHdr, tagLiteral, 6+total)
	litHdr.Write([]byte{'b', 0, 0, 0, 0, 0})

	flushed := func(data []byte) []byte {
		var b bytes.Buffer
		fw, err := flate.NewWriter(&b, flate.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(data)
		fw.Flush() // byte-aligned, self-contained blocks
		return b.Bytes()
	}
	var deflate bytes.Buffer
	deflate.Write(flushed(litHdr.Bytes()))
	zeros := flushed(make([]byte, 1<<20))
	for i := 0; i < total>>20; i++ {
		deflate.Write(zeros)
	}
	deflate.Write([]byte{0x01, 0x00, 0x00, 0xff, 0xff}) // final empty stored block

	var comp bytes.Buffer
	newHeader(&comp, tagCompressed, 1+deflate.Len())
	comp.WriteByte(byte(packet.CompressionZIP))
	comp.Write(deflate.Bytes())

	cfg := &packet.Config{Rand: detRand(10)}
	key := make([]byte, 32)
	io.ReadFull(cfg.Rand, key)
	ek, ok := to.e.EncryptionKey(to.e.PrimaryKey.CreationTime.Add(time.Minute))
	if !ok {
		t.Fatal("no encryption key")
	}
	var bin bytes.Buffer
	if err := packet.SerializeEncryptedKeyAEAD(&bin, ek.PublicKey, packet.CipherAES256, false, key, cfg); err != nil {
		t.Fatal(err)
	}
	w, err := packet.SerializeSymmetricallyEncrypted(&bin, packet.CipherAES256, false, packet.CipherSuite{}, key, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(comp.Bytes())
	w.Close()
	return encryptedMIME(armorMsg(t, bin.Bytes()), "bomb")
}

// checkOpenRefuses: Open refuses what Decrypt and Verify refuse, each for
// the same reason. A wholly encrypted message that cannot be used is an
// error; a message read as plaintext (not encrypted, EFAIL layouts,
// malformed ciphertext) has its reason in NotDecrypted; a signature that
// does not count has its reason and status in the verdict.
func checkOpenRefuses(t *testing.T, name string, msg []byte, list *Key, trusted *Keyring, o Options, decrypting bool, want error) {
	t.Helper()
	m, err := Open(msg, list, trusted, o)
	switch {
	case decrypting && IsEncrypted(msg):
		if m != nil {
			t.Fatalf("Open returned a result for a refused ciphertext: %+v", m)
		}
		mustErrIs(t, name+" (Open)", err, want, refusalSentinels)
	case decrypting:
		if err != nil || m.Encrypted() || m.Inner() != nil {
			t.Fatalf("Open = %v, encrypted %v; want plaintext", err, m != nil && m.Encrypted())
		}
		mustErrIs(t, name+" (Open, not decrypted)", m.NotDecrypted(), want, refusalSentinels)
		if m.Signature().OK() {
			t.Errorf("Open counted a signature")
		}
	default:
		if err != nil {
			t.Fatalf("Open = %v", err)
		}
		v := m.Signature()
		if v.OK() || v.Status != statusOf(want) || v.Status == SigUnreadable && !errorsIsAny(want, ErrMalformed, ErrUnsupportedProtocol) {
			t.Errorf("Open: verdict %v, want %v", v.Status, statusOf(want))
		}
		mustErrIs(t, name+" (Open)", v.Err, want, refusalSentinels)
		if !bytes.Equal(m.Content(), toCRLF(msg)) || v.SignedBytes() != nil || v.Verified() != nil {
			t.Errorf("Open: content is not the whole message after a refused signature")
		}
	}
}
