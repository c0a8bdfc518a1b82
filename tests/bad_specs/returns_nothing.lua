-- forgot the return
local x = 1
