package serve

import (
	"net/netip"
	"testing"
	"time"

	"github.com/peergate/peergate/gate/bans"
)

// FuzzDecodeState: any bytes either decode to bans that encode back to the same bytes, or give an
// error; never a panic.
func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState([]bans.Ban{{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Origin: "api", Reason: "x\ty", Created: time.Unix(5, 0), Expires: time.Unix(9, 0)}}))
	f.Add(encodeState(nil))
	f.Add([]byte("peergate-bans 1\nend 0 00000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		list, err := decodeState("f", data)
		if err != nil {
			return
		}
		again, err := decodeState("f", encodeState(list))
		if err != nil || len(again) != len(list) {
			t.Fatalf("re-encoded state does not decode alike: %v", err)
		}
	})
}
