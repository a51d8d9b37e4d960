package daemontest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/embargo-project/embargo/cmd/embargo/daemon"
)

// SendSMTP is one real SMTP transaction, with the drill's client.
func SendSMTP(addr, from string, to []string, data []byte) error {
	return daemon.Submit(addr, from, to, data)
}

// Code returns the SMTP reply code of err and its enhanced status code, 0
// for nil, -1 and the text for an error that is no SMTP reply.
func Code(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return -1, err.Error()
}

// SendRawSMTP speaks SMTP by hand so the DATA bytes reach the server exactly as
// given (dot-stuffing aside); replies come back as *smtp.SMTPError.
func SendRawSMTP(addr, from string, to []string, data []byte) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(conn)
	expect := func(want int) error {
		c, msg, err := tp.ReadResponse(want)
		if err != nil {
			if c == 0 {
				return err
			}
			se := &smtp.SMTPError{Code: c, Message: msg}
			if f := strings.Fields(msg); len(f) > 0 {
				var a, b, cc int
				if n, _ := fmt.Sscanf(f[0], "%d.%d.%d", &a, &b, &cc); n == 3 {
					se.EnhancedCode = smtp.EnhancedCode{a, b, cc}
				}
			}
			return se
		}
		return nil
	}
	if err := expect(220); err != nil {
		return err
	}
	steps := []struct {
		cmd  string
		want int
	}{{"EHLO client.test", 250}, {"MAIL FROM:<" + from + ">", 250}}
	for _, r := range to {
		steps = append(steps, struct {
			cmd  string
			want int
		}{"RCPT TO:<" + r + ">", 250})
	}
	steps = append(steps, struct {
		cmd  string
		want int
	}{"DATA", 354})
	for _, st := range steps {
		if err := tp.PrintfLine("%s", st.cmd); err != nil {
			return err
		}
		if err := expect(st.want); err != nil {
			return err
		}
	}
	body := bytes.ReplaceAll(data, []byte("\r\n."), []byte("\r\n.."))
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		body = append(body, '\r', '\n')
	}
	if _, err := conn.Write(append(body, []byte(".\r\n")...)); err != nil {
		return err
	}
	if err := expect(250); err != nil {
		return err
	}
	tp.PrintfLine("QUIT")
	return nil
}

// Transaction is the outcome of one transaction by Transact: the reply to
// each RCPT (nil for 250) and to the end of data, one per accepted
// recipient (LMTP, RFC 2033 §4.2) or one for all (SMTP, under every
// accepted recipient). Data is empty when no recipient was accepted.
type Transaction struct {
	Rcpt map[string]error
	Data map[string]error
}

// Transact is one transaction that goes on after a refused RCPT, as an MTA
// does: the accepted recipients get the message (RFC 5321 §3.3). With lmtp
// it speaks LMTP (LHLO, a reply per recipient after the data).
func Transact(addr string, lmtp bool, from string, to []string, data []byte) (Transaction, error) {
	tr := Transaction{Rcpt: map[string]error{}, Data: map[string]error{}}
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return tr, err
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := smtp.NewClient(nc)
	if lmtp {
		c = smtp.NewClientLMTP(nc)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return tr, err
	}
	if err := c.Mail(from, nil); err != nil {
		return tr, err
	}
	var accepted []string
	for _, r := range to {
		err := c.Rcpt(r, nil)
		tr.Rcpt[r] = err
		if err == nil {
			accepted = append(accepted, r)
		}
	}
	if len(accepted) == 0 {
		return tr, c.Quit()
	}
	w, err := c.Data()
	if err != nil {
		return tr, err
	}
	if _, err := w.Write(data); err != nil {
		return tr, err
	}
	if lmtp {
		_, err := w.CloseWithLMTPResponse()
		var le smtp.LMTPDataError
		if err != nil && !errors.As(err, &le) {
			return tr, err
		}
		for _, r := range accepted {
			if e, ok := le[r]; ok && e != nil {
				tr.Data[r] = e
			} else {
				tr.Data[r] = nil
			}
		}
	} else {
		_, err := w.CloseWithResponse()
		var se *smtp.SMTPError
		if err != nil && !errors.As(err, &se) {
			return tr, err
		}
		for _, r := range accepted {
			tr.Data[r] = err
		}
	}
	return tr, c.Quit()
}
