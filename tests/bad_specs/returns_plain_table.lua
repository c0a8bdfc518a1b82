-- forgot family
return { name = "bad" }
