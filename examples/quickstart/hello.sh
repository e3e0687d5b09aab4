#!/bin/sh
# A spawn handler, as inetd would run it: the client is on stdin and stdout, and peergate sets the
# UCSPI variables that describe the connection.
echo "hello $TCPREMOTEIP port $TCPREMOTEPORT, this is $TCPLOCALIP port $TCPLOCALPORT"
while IFS= read -r line; do
  echo "you said: $line"
done
