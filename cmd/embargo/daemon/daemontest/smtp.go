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
