//go:build race

package workflow

// raceEnabled: the race detector slows the property test about tenfold, so
// its default number of cases is smaller (propertyCases).
const raceEnabled = true
