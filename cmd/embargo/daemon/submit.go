package daemon

import "github.com/emersion/go-smtp"

// Submit hands one message to the daemon listening at addr with a real SMTP
// client, as any peer MTA would: the drill plays its scenarios through it,
// and the tests their mail. A refusal is the server's *smtp.SMTPError.
func Submit(addr, from string, to []string, data []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("drill.localhost"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write(data); err != nil {
		return err
	}
	if err := wc.Close(); err != nil {
		return err
	}
	return c.Quit()
}
