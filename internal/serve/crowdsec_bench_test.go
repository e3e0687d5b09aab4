package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/peergate/peergate/gate/bans"
	"github.com/peergate/peergate/internal/config"
)

// BenchmarkCrowdSecStartup100k: a startup stream of 100 000 ban decisions, from the JSON body to
// bans in the table (decode, convert, one ReplaceOrigin).
func BenchmarkCrowdSecStartup100k(b *testing.B) {
	var st stream
	for i := range 100_000 {
		st.New = append(st.New, decision{Duration: "3h59m58.5s", Origin: "crowdsec", Scenario: "crowdsecurity/ssh-bf",
			Scope: "Ip", Type: "ban", Value: fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)})
	}
	body, _ := json.Marshal(st)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		s := &Server{log: slog.New(slog.DiscardHandler), m: newMetrics(), bans: bans.New(bans.Config{})}
		cs := &crowdsec{s: s, cfg: config.CrowdSec{}}
		var got stream
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&got); err != nil {
			b.Fatal(err)
		}
		cs.apply(&got, true)
		if n := s.bans.Len(); n != 100_000 {
			b.Fatal(n)
		}
	}
}
