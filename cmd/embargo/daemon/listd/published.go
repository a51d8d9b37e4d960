package listd

import (
	"time"

	"github.com/embargo-project/embargo/workflow"
)

// AdvisoryText is the public advisory of inc as the release mails it: the
// "advisory" template (the operator's override included) over the same
// fields, so that the published web page reads exactly like the mail.
func (s *Service) AdvisoryText(inc *workflow.Incident) (string, error) {
	s = s.current()
	return s.o.Templates.Render("advisory", s.advisory(inc))
}

// observe reports to Options.Observe how long event took since start.
func (s *Service) observe(event string, start time.Time) {
	if s.o.Observe != nil {
		s.o.Observe(event, time.Since(start))
	}
}
