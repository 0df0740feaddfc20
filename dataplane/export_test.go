package dataplane_test

import "github.com/l2tpu/l2tpu/dataplane"

func init() { dataplane.RunExample = Example }
