package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/embargo-project/embargo/cmd/embargo/daemon/daemontest"
)

// This file lays out messages as Thunderbird 115, K-9 Mail with
// OpenKeychain and Apple Mail with GPG Suite send them (their MIME
// structure, transfer encodings, format=flowed and quoting), signed and
// encrypted by gpg. The same layouts are opened in lists/inbound's tests.

// replyHeader is the outer header of a member's reply to their copy:
// to the copy's Reply-To (the list address), threaded by In-Reply-To.
func (w *clientWorld) replyHeader(subject, agent string) []string {
	return []string{
		"From: Alice <alice@ex.test>",
		"To: security@ex.test",
		"Subject: " + subject,
		"Date: " + time.Now().UTC().Format(time.RFC1123Z),
		fmt.Sprintf("Message-ID: <%d.%s@ex.test>", time.Now().UnixNano(), strings.ReplaceAll(agent, " ", "-")),
		"In-Reply-To: <" + w.copyID + ">",
		"References: <" + w.root + "> <" + w.copyID + ">",
		agentField(agent),
		"MIME-Version: 1.0",
	}
}

func agentField(agent string) string {
	switch {
	case strings.HasPrefix(agent, "Thunderbird"):
		return "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.16.0"
	case strings.HasPrefix(agent, "K-9"):
		return "User-Agent: K-9 Mail for Android"
	}
	return "X-Mailer: Apple Mail (2.3774.600.62)"
}

func joinMail(header []string, body string) []byte {
	return []byte(daemontest.CRLF(strings.Join(header, "\n")+"\n") + body)
}

// quoteOf is the quoted copy a reply carries, with a command line inside
// the quote that must never count.
func (w *clientWorld) quoteOf(prefix string) string {
	return prefix + "Bob wrote:\n> Steps to reproduce: a crafted input overflows the \n> parser.\n>> /set credit QUOTED-NEVER-COUNTS\n"
}

// tbText is Thunderbird 115's text part (format=flowed, base64, as it
// encodes signed text) in multipart/mixed with protected headers and the
// sender's public key attached.
func (w *clientWorld) tbPart(text, subject string) string {
	return daemontest.Entity(daemontest.Multipart("------------tb115text", "",
		daemontest.Entity(daemontest.Base64(daemontest.CRLF(text)), "Content-Type: text/plain; charset=UTF-8; format=flowed", "Content-Transfer-Encoding: base64"),
		daemontest.Entity(string(w.alice.Export(w.afpr)), `Content-Type: application/pgp-keys; name="OpenPGP_0xALICE.asc"`,
			`Content-Disposition: attachment; filename="OpenPGP_0xALICE.asc"`, "Content-Description: OpenPGP public key")),
		`Content-Type: multipart/mixed; boundary="------------tb115text";`+"\n"+` protected-headers="v1"`,
		"From: Alice <alice@ex.test>", "To: security@ex.test", "Subject: "+subject)
}

// tbSigned is a Thunderbird 115 PGP/MIME signed reply.
func (w *clientWorld) tbSigned(text string) []byte {
	subject := "Re: [" + w.id + "] heap overflow"
	return joinMail(w.replyHeader(subject, "Thunderbird"), w.alice.SignedMIME(w.afpr, "------------tb115sig", "pgp-sha256", w.tbPart(text, subject),
		`Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"`, "Content-Description: OpenPGP digital signature",
		`Content-Disposition: attachment; filename="OpenPGP_signature.asc"`))
}

// flowed wraps a long line the way Thunderbird does: a trailing space marks
// the soft break (RFC 3676 §4.2).
const tbCredit = "Thunderbird 115, format=flowed, whose long command line the client wrapped at seventy-two columns"

func tbFlowedCredit() string {
	return "/set credit Thunderbird 115, format=flowed, whose long command line the \nclient wrapped at seventy-two columns\n"
}

func (w *clientWorld) clearsignedBy(text string) string {
	return string(w.alice.Must([]byte(text), "--local-user", w.afpr, "--clearsign"))
}

// layoutCases are the messages built to the clients' formats.
func layoutCases() []clientCase {
	const k9 = "K-9 Mail 6 + OpenKeychain (layout)"
	const tb = "Thunderbird 115 (layout)"
	k9Text := func(credit string) string { return "/set credit " + credit + "\n\nSent from my phone\n" }
	return []clientCase{
		{name: "tb115-signed-above", client: tb, layout: "PGP/MIME signed, format=flowed, base64, key attached, reply above the quote",
			outcome: "applied", credit: tbCredit, build: func(w *clientWorld, t *testing.T) []byte {
				return w.tbSigned(tbFlowedCredit() + "\n" + w.quoteOf("On 01/12/2026 10:00, ") + "\n-- \nAlice\n")
			}},
		{name: "tb115-signed-below", client: tb, layout: "PGP/MIME signed, format=flowed, reply below the quote",
			outcome: "applied", credit: "Thunderbird below the quote", build: func(w *clientWorld, t *testing.T) []byte {
				return w.tbSigned(w.quoteOf("On 01/12/2026 10:00, ") + "\n/set credit Thunderbird below the quote\n\nI will take it.\n\n-- \nAlice\n")
			}},
		{name: "tb115-signed-encrypted", client: tb, layout: "PGP/MIME signed and encrypted, protected headers, outer Subject \"...\"",
			outcome: "applied", credit: "Thunderbird encrypted", build: func(w *clientWorld, t *testing.T) []byte {
				subject := "Re: [" + w.id + "] heap overflow"
				inner := w.tbPart("/set credit Thunderbird encrypted\n\n"+w.quoteOf("On 01/12/2026 10:00, "), subject)
				return joinMail(w.replyHeader("...", "Thunderbird"), w.alice.EncryptedMIME(w.secFpr, w.afpr, "------------tb115enc", inner))
			}},
		{name: "tb115-two-blocks", client: tb, layout: "PGP/MIME signed, a command block above and another below the quote",
			outcome: "refused", reason: "two command blocks", build: func(w *clientWorld, t *testing.T) []byte {
				return w.tbSigned("/set credit first block\n\n" + w.quoteOf("On 01/12/2026 10:00, ") + "\n/set credit second block\n")
			}},
		{name: "tb115-quoted-only", client: tb, layout: "PGP/MIME signed, a command line only inside the quote",
			outcome: "ignored", build: func(w *clientWorld, t *testing.T) []byte {
				return w.tbSigned("Agreed, see below.\n\n" + w.quoteOf("On 01/12/2026 10:00, "))
			}},
		{name: "tb115-list-footer", client: tb + " via a list", layout: "PGP/MIME signed part with a footer added beside it",
			outcome: "refused", reason: "only part of the message is signed", build: func(w *clientWorld, t *testing.T) []byte {
				subject := "Re: [" + w.id + "] heap overflow"
				signed := w.alice.SignedMIME(w.afpr, "------------tb115sig", "pgp-sha256", w.tbPart("/set credit with a footer\n", subject))
				body := daemontest.Entity(daemontest.Multipart("listfooter", "", signed, daemontest.Entity("-- \nthe list footer\n", "Content-Type: text/plain")),
					`Content-Type: multipart/mixed; boundary="listfooter"`)
				return joinMail(w.replyHeader(subject, "Thunderbird"), body)
			}},
		{name: "k9-inline-qp", client: k9, layout: "inline clear-signed, quoted-printable, UTF-8",
			outcome: "applied", credit: "Jürgen Müller (K-9, QP)", build: func(w *clientWorld, t *testing.T) []byte {
				return joinMail(append(w.replyHeader("Re: ["+w.id+"] heap overflow", "K-9"), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"),
					"\r\n"+daemontest.QP(w.clearsignedBy(k9Text("Jürgen Müller (K-9, QP)"))))
			}},
		{name: "k9-inline-8bit", client: k9, layout: "inline clear-signed, 8bit, UTF-8",
			outcome: "applied", credit: "Jürgen Müller (K-9, 8bit)", build: func(w *clientWorld, t *testing.T) []byte {
				return joinMail(append(w.replyHeader("Re: ["+w.id+"] heap overflow", "K-9"), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"),
					"\r\n"+daemontest.CRLF(w.clearsignedBy(k9Text("Jürgen Müller (K-9, 8bit)"))))
			}},
		{name: "k9-inline-base64", client: k9, layout: "inline clear-signed, base64, UTF-8",
			outcome: "applied", credit: "Jürgen Müller (K-9, base64)", build: func(w *clientWorld, t *testing.T) []byte {
				return joinMail(append(w.replyHeader("Re: ["+w.id+"] heap overflow", "K-9"), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64"),
					"\r\n"+daemontest.Base64(daemontest.CRLF(w.clearsignedBy(k9Text("Jürgen Müller (K-9, base64)")))))
			}},
		{name: "k9-inline-encrypted", client: k9, layout: "inline signed and encrypted (armored body), quoted-printable",
			outcome: "applied", credit: "K-9 encrypted", build: func(w *clientWorld, t *testing.T) []byte {
				ct := w.alice.Must([]byte(k9Text("K-9 encrypted")), "--armor", "--recipient", w.secFpr, "--local-user", w.afpr, "--sign", "--encrypt")
				return joinMail(append(w.replyHeader("Re: ["+w.id+"] heap overflow", "K-9"), "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"),
					"\r\n"+daemontest.QP(string(ct)))
			}},
		{name: "apple-signed-alternative", client: "Apple Mail + GPG Suite (layout)", layout: "PGP/MIME signed, text and HTML alternatives, reply above the quote",
			outcome: "applied", credit: "Apple Mail", build: func(w *clientWorld, t *testing.T) []byte {
				text := "/set credit Apple Mail\n\n> On 1 Dec 2026, at 10:00, Bob <bob@ex.test> wrote:\n> \n> Please take it.\n"
				html := "<html><body><div>/set credit Apple Mail HTML</div><blockquote>Please take it.</blockquote></body></html>"
				part := daemontest.Entity(daemontest.Multipart("Apple-Mail=_9A1B", "",
					daemontest.Entity(daemontest.QP(text), "Content-Transfer-Encoding: quoted-printable", "Content-Type: text/plain; charset=utf-8"),
					daemontest.Entity(daemontest.QP(html), "Content-Transfer-Encoding: quoted-printable", "Content-Type: text/html; charset=utf-8")),
					`Content-Type: multipart/alternative; boundary="Apple-Mail=_9A1B"`)
				return joinMail(w.replyHeader("Re: ["+w.id+"] heap overflow", "Apple Mail"), w.alice.SignedMIME(w.afpr, "Apple-Mail=_2F4D", "pgp-sha512", part,
					"Content-Transfer-Encoding: 7bit", "Content-Disposition: attachment; filename=signature.asc",
					"Content-Type: application/pgp-signature; name=signature.asc", "Content-Description: Message signed with OpenPGP"))
			}},
	}
}
